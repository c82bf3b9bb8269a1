"""JavaScript functions: the QuickJS-ng engine guest (one module for every JS function) and the
loading of a function's bundle into its instances. See hive/js/engine.py and hive/js/instance.py."""

from hive.js.engine import ENGINE_WASI_GROUPS, QUICKJS_SDIST_VERSION, build_engine, default_cache_dir, engine_key
from hive.js.instance import (
    BYTECODE_MAGIC,
    DEFAULT_LOAD_TIMEOUT_MS,
    ENGINE_WASI,
    JsFunction,
    JsLoadError,
    compile_bundle,
    load_engine,
    new_instance,
)

__all__ = [
    "BYTECODE_MAGIC",
    "DEFAULT_LOAD_TIMEOUT_MS",
    "ENGINE_WASI",
    "ENGINE_WASI_GROUPS",
    "JsFunction",
    "JsLoadError",
    "QUICKJS_SDIST_VERSION",
    "build_engine",
    "compile_bundle",
    "default_cache_dir",
    "engine_key",
    "load_engine",
    "new_instance",
]
