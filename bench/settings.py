"""Settings for the gunicorn process of ``bench live``: the project's, plus bench URLs.

Only the URLconf differs, so the bare baseline view runs behind exactly the
middleware, session and authentication stack the console runs with.
"""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.web"
