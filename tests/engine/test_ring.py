"""The hash ring's promises: total, bounded, minimal, stable and deterministic.

Pure functions, so no database and no Django: these run under plain pytest too.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from bisect import bisect_right
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.base import ROOT
from workers import ring
from workers.ring import assign, bucket_for, capacity, moves

SIZES = [1, 7, 64, 256]


def names(count: int, prefix: str = "worker") -> list[str]:
    return [f"{prefix}-{index}" for index in range(count)]


def loads(assignment: dict[int, str]) -> Counter[str]:
    return Counter(assignment.values())


def check_total_and_bounded(buckets: int, workers: set[str], assignment: dict[int, str], epsilon: float = 0.25) -> None:
    if not workers:
        assert assignment == {}
        return
    assert sorted(assignment) == list(range(buckets))
    assert set(assignment.values()) <= workers
    assert max(loads(assignment).values()) <= capacity(buckets, len(workers), epsilon)


def check_leave(before: dict[int, str], after: dict[int, str], leaver: str) -> None:
    assert {source for _, source, _ in moves(before, after)} <= {leaver}
    assert leaver not in after.values()


def check_join(buckets: int, before: dict[int, str], after: dict[int, str], joiner: str, workers_after: int) -> None:
    moved = moves(before, after)
    assert {target for _, _, target in moved} <= {joiner}
    assert len(moved) <= 1.1 * buckets / workers_after
    # No slack needed: the joiner always reaches the rounded-down fair share.
    assert loads(after)[joiner] >= buckets // workers_after


# bucket_for


def test_bucket_for_gives_the_same_bucket_in_every_process() -> None:
    # Pinned values: changing them would silently re-route every stored order.
    assert [bucket_for(key, 256) for key in ["", "soho", "brooklyn", "area-42"]] == [180, 99, 219, 242]
    assert bucket_for("soho", 4096) == 3427
    script = "from workers.ring import bucket_for; print(bucket_for('soho', 256))"
    for seed in ["1", "2"]:
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert result.stdout.strip() == "99"


def test_bucket_for_spreads_keys_evenly() -> None:
    counts = Counter(bucket_for(f"order-{index}", 16) for index in range(16_000))
    assert sorted(counts) == list(range(16))
    assert max(counts.values()) < 1.1 * 1000
    assert min(counts.values()) > 0.9 * 1000


def test_bucket_for_rejects_fewer_than_one_bucket() -> None:
    with pytest.raises(ValueError, match="buckets must be at least 1, not 0"):
        bucket_for("soho", 0)


# capacity


def test_capacity_rounds_the_bound_up() -> None:
    assert capacity(256, 3) == 107
    assert capacity(256, 10) == 32
    assert capacity(4096, 1000) == 6
    assert capacity(7, 40) == 1
    assert capacity(256, 10, epsilon=0.1) == 29


def test_capacity_never_leaves_buckets_without_room() -> None:
    assert capacity(10, 4, epsilon=0) == 3
    assert capacity(1, 2, epsilon=0) == 1


def test_capacity_rejects_no_workers_and_negative_epsilon() -> None:
    with pytest.raises(ValueError, match="workers must be at least 1, not 0"):
        capacity(256, 0)
    with pytest.raises(ValueError, match="epsilon must not be negative, not -0.1"):
        capacity(256, 3, epsilon=-0.1)


# assign and moves


def test_with_no_workers_nobody_owns_anything() -> None:
    assert assign(256, [], {0: "worker-0", 1: None}) == {}


@pytest.mark.parametrize("buckets", SIZES)
@pytest.mark.parametrize("count", [1, 3, 10, 40])
def test_from_scratch_every_bucket_gets_a_live_owner_within_capacity(buckets: int, count: int) -> None:
    workers = names(count)
    assignment = assign(buckets, workers, {})
    check_total_and_bounded(buckets, set(workers), assignment)


@pytest.mark.parametrize(("buckets", "count"), [(256, 3), (256, 10), (4096, 100), (7, 3), (7, 40)])
def test_loads_differ_by_at_most_one(buckets: int, count: int) -> None:
    assignment = assign(buckets, names(count), {})
    counts = [loads(assignment)[worker] for worker in names(count)]
    assert max(counts) - min(counts) <= 1


def test_the_result_does_not_depend_on_the_order_of_workers_or_current() -> None:
    workers = names(12)
    current = assign(256, workers[:10], {})
    expected = assign(256, workers, current)
    shuffler = random.Random(7)
    for _ in range(5):
        shuffled = workers + workers[:3]  # duplicates count once
        shuffler.shuffle(shuffled)
        items = list(current.items())
        shuffler.shuffle(items)
        assert assign(256, iter(shuffled), dict(items)) == expected


def test_two_monitors_in_separate_processes_agree() -> None:
    script = (
        "import json; from workers.ring import assign; "
        "print(json.dumps(assign(256, [f'worker-{i}' for i in range(10)], {})))"
    )
    outputs = []
    for seed in ["1", "2"]:
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        outputs.append({int(bucket): worker for bucket, worker in json.loads(result.stdout).items()})
    assert outputs[0] == outputs[1] == assign(256, names(10), {})


def test_from_scratch_most_buckets_go_to_the_first_worker_clockwise() -> None:
    for buckets, count in [(256, 10), (4096, 100)]:
        workers = names(count)
        assignment = assign(buckets, workers, {})
        points = sorted((point, worker) for worker in workers for point in ring._worker_points(worker))
        first = {
            bucket: points[bisect_right(points, (ring._bucket_point(bucket), "")) % len(points)][1]
            for bucket in range(buckets)
        }
        agree = sum(assignment[bucket] == first[bucket] for bucket in range(buckets))
        assert agree >= 0.7 * buckets


@pytest.mark.parametrize(("buckets", "count"), [(256, 3), (256, 10), (1024, 40), (4096, 100), (7, 5)])
def test_a_leave_moves_only_the_leavers_buckets(buckets: int, count: int) -> None:
    workers = names(count)
    before = assign(buckets, workers, {})
    leaver = workers[count // 2]
    after = assign(buckets, [worker for worker in workers if worker != leaver], before)
    check_leave(before, after, leaver)
    assert len(moves(before, after)) == loads(before)[leaver]


@pytest.mark.parametrize(("buckets", "count"), [(256, 1), (256, 3), (256, 10), (1024, 40), (4096, 100), (7, 5)])
def test_a_join_moves_buckets_only_to_the_joiner_and_only_its_fair_share(buckets: int, count: int) -> None:
    workers = names(count)
    before = assign(buckets, workers, {})
    after = assign(buckets, [*workers, "joiner"], before)
    check_join(buckets, before, after, "joiner", count + 1)
    assert len(moves(before, after)) == buckets // (count + 1)


def test_running_assign_again_moves_nothing() -> None:
    workers = names(10)
    once = assign(256, workers, {0: "worker-3", 1: "gone", 2: None})
    assert assign(256, workers, once) == once
    assert moves(once, assign(256, workers, once)) == []


def test_dead_owners_missing_buckets_and_none_count_as_ownerless() -> None:
    workers = names(4)
    current: dict[int, str | None] = dict.fromkeys(range(0, 40), "worker-0")
    current.update(dict.fromkeys(range(40, 50), "dead"))
    current.update(dict.fromkeys(range(50, 60)))
    after = assign(64, workers, current)
    check_total_and_bounded(64, set(workers), after)
    # worker-0 holds 40: it keeps the 16 it ranks highest, ceil(64 / 4), and
    # the dead, missing and ownerless buckets fill up the other three.
    assert sorted(loads(after).values()) == [16, 16, 16, 16]
    assert {bucket for bucket, worker in after.items() if worker == "worker-0"} < set(range(40))


def test_a_table_handed_in_is_levelled_to_within_one_whatever_epsilon() -> None:
    # 103 buckets over 4 workers: 25 each and 3 over, all 3 held by worker-0.
    uneven = {bucket: ("worker-0" if bucket < 28 else f"worker-{1 + bucket % 3}") for bucket in range(103)}
    assert sorted(loads(uneven).values()) == [25, 25, 25, 28]
    for epsilon in [0, 0.25, 1]:
        after = assign(103, names(4), uneven, epsilon)
        assert sorted(loads(after).values()) == [25, 26, 26, 26]
        assert [(source, target == "worker-0") for _, source, target in moves(uneven, after)] == [
            ("worker-0", False)
        ] * 2


def test_assign_rejects_a_negative_epsilon() -> None:
    with pytest.raises(ValueError, match="epsilon must not be negative, not -1"):
        assign(256, names(3), {}, epsilon=-1)


def test_moves_lists_changed_buckets_with_their_old_and_new_owner() -> None:
    before = {0: "a", 1: "b", 2: None}
    after = {0: "a", 1: "c", 2: "a", 3: "b"}
    assert moves(before, after) == [(1, "b", "c"), (2, None, "a"), (3, None, "b")]
    assert moves(before, {}) == []


def test_assigning_4096_buckets_over_1000_workers_is_fast() -> None:
    # A guard against an accidental buckets x workers algorithm (seconds),
    # far looser than the 50 ms the benchmark measures.
    workers = names(1000)
    started = time.perf_counter()
    assign(4096, workers, {})
    assert time.perf_counter() - started < 1.0


# Properties over random histories


worker_names = st.text(min_size=1, max_size=6)
steps = st.lists(
    st.one_of(st.tuples(st.just("join"), worker_names), st.tuples(st.just("leave"), st.integers(0, 1000))),
    max_size=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    buckets=st.sampled_from(SIZES),
    initial=st.sets(worker_names, min_size=0, max_size=40),
    history=steps,
)
def test_any_history_of_joins_and_leaves_keeps_ownership_total_bounded_and_minimal(
    buckets: int, initial: set[str], history: list[tuple[str, object]]
) -> None:
    workers = set(initial)
    assignment = assign(buckets, workers, {})
    check_total_and_bounded(buckets, workers, assignment)
    for action, argument in history:
        if action == "join":
            joiner = str(argument)
            if joiner in workers:
                continue
            workers.add(joiner)
            after = assign(buckets, workers, assignment)
            check_join(buckets, assignment, after, joiner, len(workers))
        else:
            if not workers:
                continue
            leaver = sorted(workers)[int(str(argument)) % len(workers)]
            workers.remove(leaver)
            after = assign(buckets, workers, assignment)
            if workers:
                check_leave(assignment, after, leaver)
        check_total_and_bounded(buckets, workers, after)
        assert assign(buckets, workers, after) == after
        assignment = after


@settings(max_examples=300, deadline=None)
@given(
    buckets=st.sampled_from(SIZES),
    workers=st.sets(worker_names, min_size=1, max_size=40),
    owners=st.lists(st.one_of(st.none(), worker_names), max_size=256),
    epsilon=st.sampled_from([0.0, 0.1, 0.25, 1.0]),
    pick=st.integers(0, 1000),
)
def test_any_table_handed_in_comes_out_balanced_and_then_moves_minimally(
    buckets: int, workers: set[str], owners: list[str | None], epsilon: float, pick: int
) -> None:
    current = dict(enumerate(owners))
    after = assign(buckets, workers, current, epsilon)
    check_total_and_bounded(buckets, workers, after, epsilon)
    counts = [loads(after)[worker] for worker in workers]
    assert max(counts) - min(counts) <= 1
    assert assign(buckets, workers, after, epsilon) == after
    reordered = dict(reversed(list(current.items())))
    assert assign(buckets, sorted(workers, reverse=True), reordered, epsilon) == after

    leaver = sorted(workers)[pick % len(workers)]
    if len(workers) > 1:
        check_leave(after, assign(buckets, workers - {leaver}, after, epsilon), leaver)
    joiner = "joiner!"  # seven characters, longer than any drawn name, so it is new
    check_join(buckets, after, assign(buckets, workers | {joiner}, after, epsilon), joiner, len(workers) + 1)
