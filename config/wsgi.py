import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# Refuse to start when the configured shards cannot serve every stored bucket: the
# error names the buckets and the command that fixes it (store.sharding).
from store.sharding import check_shard_map  # noqa: E402  (needs the app registry)

check_shard_map()
