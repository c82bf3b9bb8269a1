"""Edge Hive: a self-hosted edge-functions server running WebAssembly handlers."""

__version__ = "0.1.0"
