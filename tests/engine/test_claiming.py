"""Adaptive claiming: big batches for fast handlers, no hoarding of slow orders.

The policy is a pure function of the kitchen's recent starts, checked
directly here; the no-hoarding promise is checked with real worker processes
(tests/processes/test_claiming_processes.py).
"""

from __future__ import annotations

from workers import prefetch

# --- The policy -------------------------------------------------------------------


def test_an_idle_kitchen_claims_its_free_slots() -> None:
    policy = prefetch.PrefetchPolicy(concurrency=4, horizon=0.15)
    assert policy.want(running=0, pending=0, now=100.0) == 4
    assert policy.want(running=3, pending=0, now=100.1) == 1


def test_fast_handlers_get_what_the_slots_start_within_the_horizon() -> None:
    policy = prefetch.PrefetchPolicy(concurrency=4, horizon=0.15)
    for _ in range(20):
        policy.finished(0.001)
    # Four slots of 1 ms: 4,000 orders a second, so 600 within the 150 ms horizon.
    assert policy.want(running=4, pending=0, now=100.0) == 600
    # Those already claimed and not started count towards them.
    assert policy.want(running=4, pending=100, now=100.0) == 500


def test_the_batch_is_capped() -> None:
    policy = prefetch.PrefetchPolicy(concurrency=4, horizon=0.15)
    policy.finished(0.000001)
    assert policy.want(running=0, pending=0, now=100.0) == prefetch.MAX_BATCH


def test_slow_orders_get_no_more_than_the_free_slots() -> None:
    policy = prefetch.PrefetchPolicy(concurrency=2, horizon=0.15)
    assert policy.want(running=0, pending=0, now=100.0) == 2
    policy.finished(1.0)
    policy.finished(1.0)
    assert policy.want(running=0, pending=0, now=101.0) == 2
    assert policy.want(running=2, pending=0, now=101.01) == 0
    assert policy.want(running=1, pending=0, now=101.5) == 1


def test_the_rate_follows_the_handlers() -> None:
    policy = prefetch.PrefetchPolicy(concurrency=4, horizon=0.15)
    for _ in range(50):
        policy.finished(0.001)
    fast = policy.want(running=4, pending=0, now=100.0)
    for _ in range(50):
        policy.finished(0.1)
    assert fast == 600
    assert policy.want(running=4, pending=0, now=100.0) == 6


def test_a_pause_longer_than_the_horizon_forgets_the_rate() -> None:
    policy = prefetch.PrefetchPolicy(concurrency=4, horizon=0.15)
    policy.finished(0.001)
    assert policy.want(running=0, pending=0, now=100.0) > 4
    assert policy.want(running=0, pending=0, now=100.1) > 4  # idle, but not for a horizon yet
    assert policy.want(running=0, pending=0, now=100.2) == 4


def test_never_fewer_than_the_free_slots_even_with_no_horizon() -> None:
    policy = prefetch.PrefetchPolicy(concurrency=8, horizon=0.0)
    policy.finished(0.000001)
    assert policy.want(running=2, pending=0, now=100.0) == 6


def test_an_explicit_prefetch_replaces_the_rate() -> None:
    policy = prefetch.PrefetchPolicy(concurrency=4, horizon=0.15, prefetch=100)
    assert policy.want(running=0, pending=0, now=100.0) == 104
    policy.finished(10.0)
    assert policy.want(running=4, pending=30, now=100.01) == 70
