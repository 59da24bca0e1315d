import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_asgi_application()

# As config/wsgi.py: refuse to start when the shards cannot serve the stored map.
from store.sharding import check_shard_map  # noqa: E402  (needs the app registry)

check_shard_map()
