"""The fencing rule (hive.cluster.lease) as plain functions: what a node past its lease concludes from its
peers' /readyz answers, and when its workers refuse invocations. The real-process behaviour is in
tests/cluster/test_fencing.py."""

from __future__ import annotations

from typing import Any

from hive.cluster.lease import FENCE, SERVE, Timing, fenced, held, judge
from hive.cluster.replicator import NodeState

T = Timing(5.0)
MINE = 1000.0  # PostgreSQL's clock at this node's last renewal


def peer(node: str, connected: bool, renewed_at: float | None) -> dict[str, Any]:
    cluster: dict[str, Any] = {"node": node, "connected": connected}
    if renewed_at is not None:
        cluster["lease"] = {"renewed_at": renewed_at}
    return {"ready": True, "cluster": cluster}


def test_a_peer_that_renewed_since_proves_postgres_up() -> None:
    answers = {"b": peer("b", True, MINE + 3), "c": peer("c", False, MINE + 0.5)}
    v = judge("a", MINE, answers, T, asked=2)
    assert not v.serve and (v.reached, v.connected) == (2, 1) and "cut off" in v.detail


def test_peers_that_lost_postgres_too_mean_it_is_down_for_everyone() -> None:
    # Both answer; one still says connected but has not renewed since this node's last renewal (a
    # PostgreSQL that hangs rather than refuses): no proof that anything can commit.
    answers = {"b": peer("b", False, MINE + 0.4), "c": peer("c", True, MINE + 1.0)}
    v = judge("a", MINE, answers, T, asked=2)
    assert v.serve and (v.reached, v.connected) == (2, 0) and "down for everyone" in v.detail


def test_no_peer_answers_means_isolated() -> None:
    v = judge("a", MINE, {"b": None, "c": None}, T, asked=2)
    assert not v.serve and v.reached == 0 and "isolated" in v.detail


def test_one_reachable_peer_is_enough_to_keep_serving() -> None:
    v = judge("a", MINE, {"b": None, "c": peer("c", False, MINE)}, T, asked=2)
    assert v.serve and v.reached == 1


def test_a_cluster_of_one_keeps_serving() -> None:
    v = judge("a", MINE, {}, T, asked=0)
    assert v.serve and "cluster of one" in v.detail


def test_answers_that_are_not_a_peer_do_not_count() -> None:
    answers = {
        "self": peer("a", True, MINE + 10),  # this node behind another address
        "single": {"ready": True},  # a server without cluster mode
        "junk": {"cluster": "x"},
    }
    v = judge("a", MINE, answers, T, asked=3)
    assert not v.serve and v.reached == 0  # none of the three is a peer: isolated


def test_a_node_that_never_renewed_takes_any_connected_peer_as_proof() -> None:
    v = judge("a", 0.0, {"b": peer("b", True, MINE)}, T, asked=1)
    assert not v.serve


def state(**kw: Any) -> NodeState:
    return NodeState([1, 1], "a", 1, **kw)


def test_the_workers_rule() -> None:
    now = 500.0
    # Within its own view of the lease (shorter than the writers'): serving, whatever the verdict.
    s = state(renewed=now - T.own_s + 0.01, verdict=FENCE, verdict_at=now)
    assert held(s, T, now) and not fenced(s, T, now)
    # Past it: only a fresh verdict to serve keeps it serving.
    assert fenced(state(renewed=now - T.own_s), T, now)
    assert fenced(state(renewed=now - 10, verdict=FENCE, verdict_at=now), T, now)
    assert not fenced(state(renewed=now - 10, verdict=SERVE, verdict_at=now - 1), T, now)
    assert fenced(state(renewed=now - 10, verdict=SERVE, verdict_at=now - T.verdict_s), T, now)  # stale
    assert fenced(state(), T, now)  # never renewed in this server run, no verdict
    assert T.own_s < T.lease_s and T.overdue_s + T.check_s < T.own_s  # two checks before it ends
