# gunicorn -c conf/gunicorn.conf.py: the settings `edge-hive serve` uses (workers/gunicorn_conf.py),
# executed afresh on every SIGHUP so edits to hive.toml take effect on reload.
import importlib.util
import runpy

globals().update(runpy.run_path(importlib.util.find_spec("workers.gunicorn_conf").origin))
