"""wasmtime sandbox: knows nothing of HTTP or LMDB."""

from hive.sandbox.engine import CompiledModule, Sandbox, check_wasm_header
from hive.sandbox.guest import GuestInstance, GuestLimits
from hive.sandbox.host import GuestContext
from hive.sandbox.warmup import warm_up

__all__ = ["CompiledModule", "GuestContext", "GuestInstance", "GuestLimits", "Sandbox", "check_wasm_header", "warm_up"]
