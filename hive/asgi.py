"""The ASGI entry point gunicorn loads in each worker. Building the app does no work; the lifespan does."""

from hive.app import create_app

app = create_app()
