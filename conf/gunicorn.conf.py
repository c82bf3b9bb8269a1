# gunicorn -c conf/gunicorn.conf.py  (edge-hive serve uses the same settings module)
from workers.gunicorn_conf import *  # noqa: F401,F403
from workers.gunicorn_conf import on_starting  # noqa: F401
