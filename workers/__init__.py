"""The process layer inside gunicorn: worker class and server hooks. Imports hive; hive never imports it."""
