"""The function registry on LMDB. Knows nothing of wasmtime or HTTP.

Layout (named databases in one environment):
  meta      b"generation" -> u64 big-endian, bumped by every change
  functions name -> FunctionRecord (current-version pointer)
  versions  name \\0 u32be(version) -> VersionRecord
  blobs     sha256 hex -> module bytes
  refs      sha256 hex -> u32be count of versions that use the blob

Every change is one write transaction, so a reader sees all of a deploy or none of it.
Open one Registry per process, after fork.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import lmdb
import msgspec

from hive.errors import (
    FunctionNotFound,
    InsufficientStorage,
    NoPreviousVersion,
    NotFound,
    RegistryDamaged,
    RegistryError,
    RegistryFull,
)
from hive.lmdbfiles import check_not_truncated  # noqa: F401 - re-exported
from hive.manifest import Manifest

_GEN = b"generation"
_REPLICA = b"replica"  # meta: u64be(generation of the last apply_replica) + its mark


class FunctionRecord(msgspec.Struct):
    name: str
    current: int
    latest: int
    created_at: float


class VersionRecord(msgspec.Struct):
    name: str
    version: int
    sha256: str
    size: int
    deployed_at: float
    manifest: Manifest


class FunctionState(msgspec.Struct):
    """A function as a replica holds it (hive.cluster): its pointer and every kept version."""

    function: FunctionRecord
    versions: list[VersionRecord]


_enc = msgspec.msgpack.Encoder()
_dec_fn = msgspec.msgpack.Decoder(FunctionRecord)
_dec_ver = msgspec.msgpack.Decoder(VersionRecord)


def _vkey(name: str, version: int) -> bytes:
    return name.encode() + b"\x00" + version.to_bytes(4, "big")


def _u(raw: bytes | None) -> int:
    return int.from_bytes(raw, "big") if raw else 0


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def free_bytes(path: Path) -> int:
    """Space a write under `path` can still use (root may use the reserved blocks too)."""
    st = os.statvfs(path)
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


class Registry:
    def __init__(
        self,
        path: str | Path,
        *,
        map_size_mb: int = 8192,
        keep_versions: int = 10,
        on_drop: Callable[[list[str]], None] | None = None,
    ) -> None:
        # Told, after the commit, the sha256 of every blob a change removed (its last version was
        # pruned or deleted), so that their compiled artifacts can go too (Sandbox.forget).
        self.on_drop = on_drop
        path = Path(path)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self.keep_versions = max(1, keep_versions)
        try:
            # 0600: it holds config values and API keys (py-lmdb's default is 0755, less the umask).
            self.env = lmdb.open(
                str(path),
                map_size=map_size_mb << 20,
                max_dbs=8,
                subdir=True,
                mode=0o600,
                readahead=False,
                max_readers=512,
            )
        except lmdb.Error as e:
            raise RegistryError(f"cannot open registry at {path}: {e}") from e
        self.map_size_mb = map_size_mb
        try:
            check_not_truncated(self.env, path)  # before any read: a page past the end is SIGBUS, not an error
        except BaseException:
            self.env.close()
            raise
        self._meta = self.env.open_db(b"meta")
        self._functions = self.env.open_db(b"functions")
        self._versions = self.env.open_db(b"versions")
        self._blobs = self.env.open_db(b"blobs")
        self._refs = self.env.open_db(b"refs")
        self._secrets = self.env.open_db(b"secrets")  # server-wide: every function's config, under its own

    def close(self) -> None:
        self.env.close()

    # Reads

    def generation(self) -> int:
        with self.env.begin(db=self._meta, buffers=False) as txn:
            return _u(txn.get(_GEN))

    def current(self, name: str) -> VersionRecord | None:
        with self.env.begin() as txn:
            return self._current(txn, name)

    def _current(self, txn: lmdb.Transaction[bytes], name: str) -> VersionRecord | None:
        raw = txn.get(name.encode(), db=self._functions)
        if raw is None:
            return None
        fn = _dec_fn.decode(raw)
        return self._version(txn, name, fn.current)

    def _version(self, txn: lmdb.Transaction[bytes], name: str, version: int) -> VersionRecord:
        raw = txn.get(_vkey(name, version), db=self._versions)
        if raw is None:  # the integrity walker reports this too; a write transaction never leaves it
            raise RegistryDamaged(
                f"the registry is damaged: function {name!r} points at v{version}, which is "
                f"missing; deploy {name!r} again, or restore the data dir from a backup"
            )
        return _dec_ver.decode(raw)

    def snapshot(self) -> tuple[int, dict[str, VersionRecord]]:
        """The generation and every function's current version, read in one transaction."""
        with self.env.begin() as txn:
            gen = _u(txn.get(_GEN, db=self._meta))
            out = {}
            for key, raw in txn.cursor(db=self._functions):
                fn = _dec_fn.decode(raw)
                out[key.decode()] = self._version(txn, fn.name, fn.current)
            return gen, out

    # --- server-wide secrets (every function sees them in its config; its own values win) ---

    def secrets(self) -> dict[str, str]:
        with self.env.begin(db=self._secrets) as txn:
            return {k.decode(): v.decode() for k, v in txn.cursor()}

    def set_secrets(self, values: Mapping[str, str]) -> None:
        with self._write(adds=sum(len(k) + len(v) for k, v in values.items())) as (txn, _):
            for k, v in values.items():
                txn.put(k.encode(), v.encode(), db=self._secrets)
            self._bump(txn)

    def unset_secrets(self, names: list[str]) -> list[str]:
        """The names that were set (and are now gone)."""
        with self._write() as (txn, _):
            gone = [n for n in names if txn.delete(n.encode(), db=self._secrets)]
            if gone:
                self._bump(txn)
        return gone

    def versions(self, name: str) -> list[VersionRecord]:
        prefix = name.encode() + b"\x00"
        with self.env.begin(db=self._versions) as txn:
            if txn.get(name.encode(), db=self._functions) is None:
                raise FunctionNotFound(f"function {name!r} is not deployed")
            cur = txn.cursor()
            out = []
            if cur.set_range(prefix):
                for key, raw in cur:
                    if not key.startswith(prefix):
                        break
                    out.append(_dec_ver.decode(raw))
            return out

    def has_blob(self, sha256: str) -> bool:
        with self.env.begin(db=self._blobs) as txn:
            return txn.get(sha256.encode()) is not None

    def blob(self, sha256: str) -> bytes:
        with self.env.begin(db=self._blobs) as txn:
            raw = txn.get(sha256.encode())
        if raw is None:
            raise NotFound(f"no module with sha256 {sha256}")
        return raw

    # Writes: each is one transaction.

    @contextlib.contextmanager
    def _write(self, adds: int = 0) -> Iterator[tuple[lmdb.Transaction[bytes], list[str]]]:
        """One write transaction; a full map or a full disk is its own error, not a 500. `adds` is
        about how many bytes the change stores (to tell a full disk from another write error)."""
        dropped: list[str] = []
        try:
            with self.env.begin(write=True) as txn:
                yield txn, dropped
        except lmdb.MapFullError:
            raise RegistryFull(
                f"the registry is full: its map (registry_map_size_mb = {self.map_size_mb} MiB) is used up. "
                "Raise the server setting registry_map_size_mb (HIVE_REGISTRY_MAP_SIZE_MB; the map is sparse, "
                "so a large value costs no disk) and restart, or delete functions or lower keep_versions",
                limit=self.map_size_mb,
                setting="registry_map_size_mb",
            ) from None
        except lmdb.Error as e:
            free = free_bytes(self.path)
            # LMDB reports a short write on a full disk as EIO, so look at the disk itself.
            if "No space left" in str(e) or free < adds + (8 << 20):
                raise InsufficientStorage(
                    f"no space left on the disk of {self.path} ({free} bytes free) to store the change: "
                    "free some space, then try again"
                ) from None
            raise RegistryError(f"the registry could not write: {e}") from e
        if dropped and self.on_drop is not None:
            self.on_drop(dropped)

    def deploy(self, name: str, wasm: bytes, manifest: Manifest, sha256: str | None = None) -> VersionRecord:
        if not isinstance(wasm, bytes):  # with a given sha256 nothing else would catch it
            raise TypeError(f"wasm must be bytes, not {type(wasm).__name__}")
        sha = sha256 or sha256_hex(wasm)
        with self._write(adds=len(wasm)) as (txn, dropped):
            raw = txn.get(name.encode(), db=self._functions)
            now = time.time()
            fn = _dec_fn.decode(raw) if raw else FunctionRecord(name, 0, 0, now)
            fn.latest += 1
            fn.current = fn.latest
            rec = VersionRecord(name, fn.latest, sha, len(wasm), now, manifest)
            key = sha.encode()
            if txn.get(key, db=self._blobs) is None:
                txn.put(key, wasm, db=self._blobs)
            self._incref(txn, key, +1, dropped)
            txn.put(_vkey(name, rec.version), _enc.encode(rec), db=self._versions)
            txn.put(name.encode(), _enc.encode(fn), db=self._functions)
            self._prune(txn, name, fn.latest - self.keep_versions + 1, dropped)
            self._bump(txn)
        return rec

    def set_current(self, name: str, version: int | None = None) -> VersionRecord:
        """Move the current pointer to `version`, or to the newest kept version below the current one."""
        with self._write() as (txn, _):
            raw = txn.get(name.encode(), db=self._functions)
            if raw is None:
                raise FunctionNotFound(f"function {name!r} is not deployed")
            fn = _dec_fn.decode(raw)
            if version is None:
                older = [v for v in self._version_numbers(txn, name) if v < fn.current]
                if not older:
                    raise NoPreviousVersion(f"function {name!r} has no kept version before v{fn.current}")
                version = older[-1]
            # Versions are u32 in the key: a negative or huge number is simply not there (not a 500).
            vraw = txn.get(_vkey(name, version), db=self._versions) if 0 < version < 1 << 32 else None
            if vraw is None:
                raise NotFound(
                    f"function {name!r} has no version {version} (kept: "
                    f"{', '.join(map(str, self._version_numbers(txn, name)))})"
                )
            fn.current = version
            txn.put(name.encode(), _enc.encode(fn), db=self._functions)
            self._bump(txn)
            return _dec_ver.decode(vraw)

    def _version_numbers(self, txn: lmdb.Transaction[bytes], name: str) -> list[int]:
        prefix = name.encode() + b"\x00"
        cur = txn.cursor(db=self._versions)
        out = []
        if cur.set_range(prefix):
            for key in cur.iternext(values=False):
                if not key.startswith(prefix):
                    break
                out.append(int.from_bytes(key[-4:], "big"))
        return out

    def delete(self, name: str) -> None:
        with self._write() as (txn, dropped):
            if not txn.delete(name.encode(), db=self._functions):
                raise FunctionNotFound(f"function {name!r} is not deployed")
            self._prune(txn, name, 1 << 32, dropped)
            self._bump(txn)

    def _prune(self, txn: lmdb.Transaction[bytes], name: str, keep_from: int, dropped: list[str]) -> None:
        prefix = name.encode() + b"\x00"
        cur = txn.cursor(db=self._versions)
        doomed = []
        if cur.set_range(prefix):
            for key, raw in cur:
                if not key.startswith(prefix) or int.from_bytes(key[-4:], "big") >= keep_from:
                    break
                doomed.append((key, _dec_ver.decode(raw).sha256))
        for key, sha in doomed:
            txn.delete(key, db=self._versions)
            self._incref(txn, sha.encode(), -1, dropped)

    def _incref(self, txn: lmdb.Transaction[bytes], key: bytes, delta: int, dropped: list[str]) -> None:
        n = _u(txn.get(key, db=self._refs)) + delta
        if n > 0:
            txn.put(key, n.to_bytes(4, "big"), db=self._refs)
        else:
            txn.delete(key, db=self._refs)
            txn.delete(key, db=self._blobs)
            dropped.append(key.decode())

    def _bump(self, txn: lmdb.Transaction[bytes]) -> None:
        gen = _u(txn.get(_GEN, db=self._meta)) + 1
        txn.put(_GEN, gen.to_bytes(8, "big"), db=self._meta)

    # A replica (hive.cluster): another registry is the source of truth, and this one copies its state.

    def replica_mark(self) -> tuple[bytes, int] | None:
        """The mark the last apply_replica kept, and the generation that change got here: when
        generation() has moved past it, something else has written to this registry since."""
        with self.env.begin(db=self._meta, buffers=False) as txn:
            raw = txn.get(_REPLICA)
        return None if raw is None else (raw[8:], _u(raw[:8]))

    def apply_replica(
        self,
        states: Mapping[str, FunctionState | None],
        blobs: Mapping[str, bytes],
        mark: bytes,
        secrets: Mapping[str, str] | None = None,
    ) -> int:
        """In one transaction with one generation bump: make each named function exactly its state
        (None: not deployed), taking the blobs that new versions need from `blobs` unless stored here
        already, replace the secrets when given, and keep `mark` (what the source's state was).
        Pruning is the source's business: the kept versions are the ones given. The new generation."""
        with self._write(adds=sum(map(len, blobs.values()))) as (txn, dropped):
            if secrets is not None:
                txn.drop(self._secrets, delete=False)
                for k, v in secrets.items():
                    txn.put(k.encode(), v.encode(), db=self._secrets)
            for name, state in states.items():
                have = {
                    int.from_bytes(k[-4:], "big"): _dec_ver.decode(raw) for k, raw in self._version_items(txn, name)
                }
                want = {} if state is None else {v.version: v for v in state.versions}
                if state is not None and (
                    state.function.name != name
                    or state.function.current not in want
                    or any(v.name != name for v in state.versions)
                ):
                    raise RegistryError(
                        f"replica state of {name!r} is inconsistent: current "
                        f"v{state.function.current}, versions {sorted(want)}"
                    )
                for version, rec in want.items():  # add first: a blob shared with a removed version stays
                    if have.get(version) == rec:
                        continue
                    key = rec.sha256.encode()
                    if txn.get(key, db=self._blobs) is None:
                        wasm = blobs.get(rec.sha256)
                        if wasm is None or sha256_hex(wasm) != rec.sha256 or len(wasm) != rec.size:
                            raise RegistryError(f"replica of {name} v{version}: blob {rec.sha256} missing or wrong")
                        txn.put(key, wasm, db=self._blobs)
                    self._incref(txn, key, +1, dropped)
                    if version in have:
                        self._incref(txn, have[version].sha256.encode(), -1, dropped)
                    txn.put(_vkey(name, version), _enc.encode(rec), db=self._versions)
                for version, rec in have.items():
                    if version not in want:
                        txn.delete(_vkey(name, version), db=self._versions)
                        self._incref(txn, rec.sha256.encode(), -1, dropped)
                if state is None:
                    txn.delete(name.encode(), db=self._functions)
                else:
                    txn.put(name.encode(), _enc.encode(state.function), db=self._functions)
            self._bump(txn)
            gen = _u(txn.get(_GEN, db=self._meta))
            txn.put(_REPLICA, gen.to_bytes(8, "big") + mark, db=self._meta)
        return gen

    def _version_items(self, txn: lmdb.Transaction[bytes], name: str) -> list[tuple[bytes, bytes]]:
        prefix = name.encode() + b"\x00"
        cur = txn.cursor(db=self._versions)
        out = []
        if cur.set_range(prefix):
            for key, raw in cur:
                if not key.startswith(prefix):
                    break
                out.append((bytes(key), bytes(raw)))
        return out


def check_integrity(registry: Registry) -> list[str]:
    """Problems found walking every record; empty when the registry is consistent."""
    problems = []
    with registry.env.begin() as txn:
        refs: dict[bytes, int] = {}
        for _key, raw in txn.cursor(db=registry._versions):
            rec = _dec_ver.decode(raw)
            blob = txn.get(rec.sha256.encode(), db=registry._blobs)
            if blob is None:
                problems.append(f"{rec.name} v{rec.version}: blob {rec.sha256} missing")
            elif sha256_hex(blob) != rec.sha256 or len(blob) != rec.size:
                problems.append(f"{rec.name} v{rec.version}: blob does not match its sha256")
            refs[rec.sha256.encode()] = refs.get(rec.sha256.encode(), 0) + 1
        stored = {key: _u(raw) for key, raw in txn.cursor(db=registry._refs)}
        for key in stored.keys() | refs.keys():
            if refs.get(key) != stored.get(key):
                problems.append(f"refcount of {key.decode()} is {stored.get(key)}, expected {refs.get(key)}")
        for key in txn.cursor(db=registry._blobs).iternext(values=False):
            if key not in refs:
                problems.append(f"blob {key.decode()} is not used by any version")
        names = set()
        for _key, raw in txn.cursor(db=registry._functions):
            fn = _dec_fn.decode(raw)
            names.add(fn.name)
            if txn.get(_vkey(fn.name, fn.current), db=registry._versions) is None:
                problems.append(f"{fn.name}: current version {fn.current} missing")
        for key in txn.cursor(db=registry._versions).iternext(values=False):
            if key.split(b"\x00", 1)[0].decode() not in names:
                problems.append(f"version {key!r} belongs to no function")
    return problems
