"""Which live worker owns each bucket: consistent hashing with bounded loads.

Pure functions of their arguments, so that any process, on any machine, that
computes an assignment from the same membership and the same bucket table gets
the same answer, and the monitor only has to write the difference.

Virtual nodes on a hash ring, not rendezvous hashing, because of measured
cost (`python bench/ring.py`): rendezvous hashing from scratch scores every
(bucket, worker) pair, and for 4,096 buckets over 1,000 workers those
4,096,000 blake2b calls take about 3 s in pure Python, while the ring (16
points per worker, one bisect per bucket) assigns the same buckets in about
12 ms with cold caches, against a budget of 50 ms. Rendezvous scores are
still used where they are cheap: to choose which of its buckets an
overloaded worker keeps, and which buckets a joiner takes (B scores per
joiner, not B x N).

`assign()` applies three rules, in this order (B buckets, N live workers):

1. Keep. A bucket whose owner is live stays with it, up to ceil(B / N) per
   worker; an overloaded worker keeps the buckets it ranks highest.
2. Place. Each ownerless bucket goes to the first worker clockwise from the
   bucket's point on the ring whose load is below floor(B / N); buckets left
   over go to the first one below ceil(B / N).
3. Steal. A worker still below floor(B / N) (a joiner, when nothing was
   ownerless) takes buckets one at a time from the most loaded worker.

So every table `assign()` returns has loads of floor(B / N) or ceil(B / N):
the tightest bound there is, within `capacity()` for every epsilon >= 0. That
tightness costs no extra moves, and it is what makes the promises hold from
every such table:

- A leave moves only the leaver's buckets: no survivor is above
  ceil(B / (N - 1)), so nothing is shed, and the leaver's buckets are enough
  to lift every survivor to floor(B / (N - 1)), so nothing is stolen.
- A join moves exactly floor(B / (N + 1)) buckets, all to the joiner: what the
  others shed plus what it steals from the most loaded, which keeps the
  others within one of each other.
- Every owner is live and every load in [floor(B / N), ceil(B / N)], so
  running `assign()` again changes nothing.

The price is paid only by tables built from scratch. Half to nine tenths of
the buckets still go to their first worker clockwise, so such a table is
mostly a function of (bucket, worker set); but the bounds push the rest
further round, so building from scratch with one worker more, rather than
joining it to the current table, changes up to 5.4 times 1 / (N + 1) of the
owners. The monitor always passes the current table, so that only matters
on its very first run.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import struct
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from functools import lru_cache

# Points per worker on the ring: a multiple of 8, because each 64-byte
# digest yields eight of them. More points place buckets closer to their
# consistent-hash owner before the load bounds step in, at the cost of
# hashing and sorting more points when the membership changes.
VNODES = 16


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def bucket_for(routing_key: str, buckets: int) -> int:
    """Orders must land in the same bucket whichever process places them.

    Python's `hash()` is salted per process, so a cryptographic digest is used.
    """
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, not {buckets}")
    return _hash64(routing_key) % buckets


def capacity(buckets: int, workers: int, epsilon: float = 0.25) -> int:
    """The most buckets one worker may own: ceil((1 + epsilon) * buckets / workers).

    Never below ceil(buckets / workers), or the buckets would not fit.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    _check_epsilon(epsilon)
    return max(math.ceil((1 + epsilon) * buckets / workers), -(-buckets // workers))


def _check_epsilon(epsilon: float) -> None:
    if epsilon < 0:
        raise ValueError(f"epsilon must not be negative, not {epsilon}")


@lru_cache(maxsize=65536)
def _bucket_point(bucket: int) -> int:
    return _hash64(f"bucket:{bucket}")


@lru_cache(maxsize=16384)
def _worker_points(worker: str) -> tuple[int, ...]:
    # Eight points from each 64-byte digest rather than one digest per point:
    # hashing 1,000 workers' points took 11 ms the other way, 1.5 ms this way.
    # The block number sits between fixed separators, so no two
    # (block, worker) pairs spell the same text.
    points: list[int] = []
    for block in range(VNODES // 8):
        digest = hashlib.blake2b(f"vnodes:{block}:{worker}".encode(), digest_size=64).digest()
        points.extend(struct.unpack(">8Q", digest))
    return tuple(points)


def _score(worker: str, bucket: int) -> int:
    """Rendezvous score: how strongly `worker` prefers `bucket`."""
    return _hash64(f"score:{bucket}:{worker}")


class _Ring:
    """The workers' points in clockwise order, for first-fit walks."""

    def __init__(self, workers: list[str]) -> None:
        # `workers` arrive sorted and the sort below is stable, so the rare
        # point collision is broken by name, not by the caller's order.
        points: list[int] = []
        owners: list[str] = []
        for worker in workers:
            points.extend(_worker_points(worker))
            owners.extend([worker] * VNODES)
        # Sorting indices rather than (point, worker) tuples: 3.9 ms instead
        # of 5.6 ms for 1,000 workers.
        order = sorted(range(len(points)), key=points.__getitem__)
        self.points = [points[index] for index in order]
        self.owners = [owners[index] for index in order]

    def place(self, orphans: list[int], load: dict[str, int], owner: dict[int, str], limit: int) -> list[int]:
        """Give each orphan to the first worker clockwise below `limit`; return the rest."""
        hungry = sum(1 for count in load.values() if count < limit)
        size = len(self.points)
        left = []
        for bucket in orphans:
            if not hungry:
                left.append(bucket)
                continue
            index = bisect_right(self.points, _bucket_point(bucket))
            # A hungry worker exists, so the walk ends within one lap.
            while load[worker := self.owners[index % size]] >= limit:
                index += 1
            owner[bucket] = worker
            load[worker] += 1
            if load[worker] == limit:
                hungry -= 1
        return left


def _shed(owned: list[int], worker: str, keep: int) -> tuple[list[int], list[int]]:
    """Split an overloaded worker's buckets into (kept, shed), keeping those it ranks highest."""
    ranked = sorted(owned, key=lambda bucket: (_score(worker, bucket), bucket), reverse=True)
    return ranked[:keep], ranked[keep:]


def _steal(thief: str, need: int, floor: int, owner: dict[int, str], load: dict[str, int]) -> None:
    """Move `need` buckets to `thief`, each from the most loaded worker.

    Among equally loaded donors, the one holding the bucket the thief ranks
    highest gives it up, so the choice depends on names, not on list order.
    Donors never drop below `floor`, so no donor turns into a thief.
    """
    by_donor: dict[str, list[tuple[int, int]]] = {}
    for bucket, worker in owner.items():
        if worker != thief and load[worker] > floor:
            by_donor.setdefault(worker, []).append((_score(thief, bucket), bucket))
    # Each donor's buckets in ascending rank, so the best one is popped off the end.
    heap = []
    for worker, ranked in by_donor.items():
        ranked.sort()
        heap.append((-load[worker], -ranked[-1][0], worker))
    heapq.heapify(heap)
    for _ in range(need):
        _, _, donor = heapq.heappop(heap)
        ranked = by_donor[donor]
        _, bucket = ranked.pop()
        owner[bucket] = thief
        load[donor] -= 1
        load[thief] += 1
        # Only the donor's entry changed, so the rest of the heap stays valid.
        if load[donor] > floor:
            heapq.heappush(heap, (-load[donor], -ranked[-1][0], donor))


def assign(
    buckets: int,
    workers: Iterable[str],
    current: Mapping[int, str | None],
    epsilon: float = 0.25,
) -> dict[int, str]:
    """The new owner of every bucket, moving as few as balanced loads allow.

    `current` may name dead workers or none at all; those buckets, and any
    missing from it, count as ownerless. With no live workers nothing can own
    anything, so the result is empty. `epsilon` is the bound callers promise
    (see `capacity()`); the result keeps within it for every epsilon >= 0,
    because loads never differ by more than one.
    """
    _check_epsilon(epsilon)
    live = sorted(set(workers))
    if not live:
        return {}
    floor, extra = divmod(buckets, len(live))
    ceiling = floor + 1 if extra else floor

    # 1. Keep.
    owned: dict[str, list[int]] = {worker: [] for worker in live}
    orphans = []
    for bucket in range(buckets):
        worker = current.get(bucket)
        if worker in owned:
            owned[worker].append(bucket)
        else:
            orphans.append(bucket)
    for worker in live:
        if len(owned[worker]) > ceiling:
            owned[worker], shed = _shed(owned[worker], worker, ceiling)
            orphans.extend(shed)
    owner = {bucket: worker for worker in live for bucket in owned[worker]}
    load = {worker: len(owned[worker]) for worker in live}

    # 2. Place, filling everyone to the fair share before anyone gets one more.
    if orphans:
        # Only built when needed: a join orphans little or nothing, and hashing
        # and sorting 16,000 points for 1,000 workers is most of the cost.
        ring = _Ring(live)
        left = ring.place(sorted(orphans), load, owner, floor) if floor else sorted(orphans)
        if left:
            left = ring.place(left, load, owner, ceiling)
        if left:  # pragma: no cover - unreachable: N * ceiling >= B leaves room for every bucket
            raise AssertionError(f"{len(left)} buckets found no worker with room")

    # 3. Steal for whoever is still short (only possible when nothing is left ownerless).
    for worker in live:
        if load[worker] < floor:
            _steal(worker, floor - load[worker], floor, owner, load)
    return dict(sorted(owner.items()))


def moves(before: Mapping[int, str | None], after: Mapping[int, str]) -> list[tuple[int, str | None, str]]:
    """(bucket, from, to) for every bucket whose owner changed, for the monitor to record.

    Only buckets in `after` are listed: a bucket left with no owner has nobody to move to.
    """
    return [
        (bucket, before.get(bucket), worker) for bucket, worker in sorted(after.items()) if before.get(bucket) != worker
    ]
