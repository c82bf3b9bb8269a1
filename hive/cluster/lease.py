"""A node's lease on the cluster registry, and the fencing rule (docs/cluster.md, "Fencing").

A node's heartbeat row in hive_nodes is its lease, renewed about every second while its replicator is
connected and caught up. Writers wait for a node that is behind until it has loaded the change or its
lease has run out (hive.cluster.node); the node, measuring from when it SENT its last successful
renewal on its own monotonic clock, stops trusting its replica a little before that. Then it cannot
tell "PostgreSQL is down for everyone" (no change can commit anywhere: keep serving) from "I am cut
off" (changes may be committing elsewhere: fence), so it asks its peers' public /readyz:

- a peer answers that it is connected and renewed its lease well after this node last did: PostgreSQL
  is up and this node is cut off, it fences (invocations 503 node_fenced, /readyz 503);
- peers answer, none of them connected: PostgreSQL is down for all, it keeps serving its last state;
- it has peers and none answers: it is isolated, it fences;
- it knows no peer (a cluster of one): it keeps serving.

It checks from OVERDUE_FRACTION of the lease on and again every lease / 5, so a verdict is there when
the lease ends; a verdict to keep serving counts only for a little over two checks. A node that was
serving past its lease because PostgreSQL was down for everyone, and sees a peer that is back, first
reconnects (for grace_s at most) instead of fencing at once: writers wait for a node past its lease
that still answers unfenced (hive.cluster.node), so the grace serves nothing stale after a change's
answer. The fence lifts by itself once the replicator has reconnected, caught up and renewed the lease.

Pure rules and the peer check here; the replicator (hive.cluster.replicator) renews and checks, the
workers (FenceWatch) read its state file off the request path and set one flag the invoke path tests.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from hive.cluster.replicator import NodeState

log = logging.getLogger("hive.cluster")

SERVE, FENCE = "serve", "fence"
OWN_FRACTION = 0.9  # the node's own lease ends this much sooner than the writers' view of it
OVERDUE_FRACTION = 0.6  # from here on it checks its peers
WATCH_S = 0.2  # how often a worker re-reads the replicator's state (and at the lease's end exactly)


@dataclass(frozen=True)
class Timing:
    """Everything derived from cluster_lease_ms."""

    lease_s: float

    @property
    def beat_s(self) -> float:
        """How often the lease is renewed."""
        return min(1.0, self.lease_s / 5)

    @property
    def own_s(self) -> float:
        """How long the node itself trusts a renewal: shorter than the writers' lease_s, so it has decided
        before any writer stops waiting for it (the margin covers its polling and clock rates)."""
        return self.lease_s * OWN_FRACTION

    @property
    def overdue_s(self) -> float:
        return self.lease_s * OVERDUE_FRACTION

    @property
    def check_s(self) -> float:
        """How often it re-checks its peers while overdue."""
        return self.lease_s / 5

    @property
    def peer_timeout_s(self) -> float:
        return min(1.0, self.lease_s / 10)

    @property
    def verdict_s(self) -> float:
        """How long a verdict to keep serving counts: two checks and a timeout."""
        return 2 * self.check_s + self.peer_timeout_s

    @property
    def grace_s(self) -> float:
        """A node serving past its lease because PostgreSQL was down for everyone gets this long to
        reconnect once a peer shows it is back, before it fences."""
        return self.check_s

    @property
    def unfenced_wait_s(self) -> float:
        """How long a change waits for a node past its lease that still answers unfenced: its next check,
        its grace and a timeout, with room to spare."""
        return 3 * self.check_s + self.peer_timeout_s

    @property
    def evidence_s(self) -> float:
        """A peer that renewed this much later than this node last did proves PostgreSQL was up while
        this node's renewals failed (more than one renewal interval: not a node that merely renewed
        last, just before PostgreSQL stopped for everyone)."""
        return 1.5 * self.beat_s


def held(state: NodeState, timing: Timing, now: float) -> bool:
    """Whether the node's own view of its lease still holds."""
    return state.renewed > 0 and now - state.renewed < timing.own_s


def fenced(state: NodeState, timing: Timing, now: float) -> bool:
    """The rule the workers apply: past its lease a node serves only on a fresh verdict to serve."""
    if held(state, timing, now):
        return False
    return not (state.verdict == SERVE and now - state.verdict_at < timing.verdict_s)


def lease_info(state: NodeState, timing: Timing, now: float) -> dict[str, Any]:
    return {
        "ms": round(timing.lease_s * 1000),
        "held": held(state, timing, now),
        "age_ms": round((now - state.renewed) * 1000) if state.renewed > 0 else None,
        "renewed_at": state.renewed_at,  # PostgreSQL's clock (epoch seconds): what peers compare
    }


@dataclass(frozen=True)
class Verdict:
    serve: bool
    asked: int
    reached: int
    connected: int

    @property
    def detail(self) -> str:
        if not self.asked:
            return "no known peer: a cluster of one keeps serving"
        if self.connected:
            return f"{self.connected} of {self.asked} peers reach PostgreSQL: this node is cut off"
        if not self.reached:
            return f"none of {self.asked} peers answers: this node is isolated"
        return f"{self.reached} of {self.asked} peers answer, none reaches PostgreSQL: it is down for everyone"


def readyz(client: httpx.Client, url: str) -> dict[str, Any] | None:
    """A node's public /readyz as JSON (whatever its status), or None when it does not answer."""
    try:
        body = client.get(url.rstrip("/") + "/readyz", headers={"connection": "close"}).json()
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def ask_all(urls: list[str], timeout_s: float) -> dict[str, dict[str, Any] | None]:
    """Each URL's /readyz, all at once, within about timeout_s."""
    if not urls:
        return {}
    with (
        httpx.Client(timeout=timeout_s, trust_env=False) as client,
        ThreadPoolExecutor(max_workers=min(16, len(urls)), thread_name_prefix="hive-peer") as pool,
    ):
        futures = {url: pool.submit(readyz, client, url) for url in dict.fromkeys(urls)}
        return {url: f.result() for url, f in futures.items()}


def judge(
    me: str, renewed_at: float, answers: Mapping[str, dict[str, Any] | None], timing: Timing, asked: int
) -> Verdict:
    reached = connected = 0
    for body in answers.values():
        cluster = body.get("cluster") if body is not None else None
        if not isinstance(cluster, dict) or cluster.get("node") == me:
            continue  # no answer, not a node of a cluster, or this node itself behind another address
        reached += 1
        lease = cluster.get("lease")
        theirs = lease.get("renewed_at") if isinstance(lease, dict) else None
        later = isinstance(theirs, int | float) and theirs > renewed_at + timing.evidence_s
        if cluster.get("connected") is True and later:
            connected += 1
    serve = connected == 0 and (reached > 0 or asked == 0)
    return Verdict(serve, asked, reached, connected)


def check_peers(me: str, renewed_at: float, peer_urls: list[str], timing: Timing) -> Verdict:
    return judge(me, renewed_at, ask_all(peer_urls, timing.peer_timeout_s), timing, len(peer_urls))


class FenceWatch:
    """In each worker: keeps `target.fenced` (the one flag the invoke path tests) up to date from the
    replicator's state file, read every WATCH_S and at the moment the lease ends, never per request."""

    def __init__(
        self, read: Callable[[], NodeState | None], timing: Timing, target: Any, current: Callable[[NodeState], bool]
    ) -> None:
        self.read = read
        self.timing = timing
        self.target = target
        self.current = current  # whether a state is of this server run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hive-fence-watch", daemon=True)

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)

    def refresh(self) -> float:
        """Set the flag; the seconds until it should be looked at again."""
        return self.apply(self.read(), time.monotonic())

    def apply(self, state: NodeState | None, now: float) -> float:
        """Set the flag from a state just read (also by /readyz, so that a worker it calls ready serves
        at once instead of up to WATCH_S later); the seconds until it should be looked at again."""
        if state is None or not self.current(state):
            self.target.fenced = True  # no replicator of this server run has reported: nothing vouches for it
            return WATCH_S
        is_fenced = fenced(state, self.timing, now)
        if is_fenced != self.target.fenced:
            (log.warning if is_fenced else log.info)(
                "node %s %s: %s", state.node, "fenced" if is_fenced else "serves again", state.verdict_detail or "-"
            )
        self.target.fenced = is_fenced
        ends = state.renewed + self.timing.own_s - now if held(state, self.timing, now) else math.inf
        return max(0.001, min(WATCH_S, ends))

    def _run(self) -> None:
        wait = WATCH_S
        while not self._stop.wait(wait):
            try:
                wait = self.refresh()
            except Exception:  # never let the watch die: the flag would freeze
                log.exception("fence watch")
                wait = WATCH_S
