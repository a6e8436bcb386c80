"""Measure bucket assignment: how many buckets move, how even loads are, how long it takes.

    python bench/ring.py [--runs 5] [--chart docs/img/ring.png]

Prints one JSON object, then the same figures as a table. Pure Python, no
Django and no database: it imports only `workers.ring`. Times are cold (the
ring's hash caches are cleared before every run), the median of --runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script from anywhere: make the project root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers import ring  # noqa: E402

WORKER_COUNTS = [3, 10, 100, 1000]
BUCKET_COUNTS = [256, 1024, 4096]
TIME_TARGET_MS = 50.0
JOIN_SLACK = 1.1
BALANCE_TARGET = 1.25


def clear_caches() -> None:
    ring._bucket_point.cache_clear()
    ring._worker_points.cache_clear()


def median_ms(call: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        clear_caches()
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def first_clockwise_share(table: dict[int, str], names: list[str]) -> float:
    """How many buckets the load bounds left with their first worker clockwise."""
    circle = ring._Ring(sorted(names))
    first = [
        circle.owners[bisect_right(circle.points, ring._bucket_point(bucket)) % len(circle.points)] for bucket in table
    ]
    return sum(owner == table[bucket] for bucket, owner in zip(table, first, strict=True)) / len(table)


def measure(workers: int, buckets: int, runs: int) -> dict[str, Any]:
    names = [f"worker-{index}" for index in range(workers)]
    table = ring.assign(buckets, names, {})
    loads = Counter(table.values())

    leaver = names[workers // 2]
    survivors = [name for name in names if name != leaver]
    after_leave = ring.assign(buckets, survivors, table)
    leave_moves = ring.moves(table, after_leave)

    joined = [*names, "joiner"]
    after_join = ring.assign(buckets, joined, table)
    join_moves = ring.moves(table, after_join)
    # The same join computed from scratch instead of from the current table.
    scratch_changed = sum(table[bucket] != owner for bucket, owner in ring.assign(buckets, joined, {}).items())

    mean = buckets / workers
    result = {
        "workers": workers,
        "buckets": buckets,
        "capacity": ring.capacity(buckets, workers),
        "max_load": max(loads.values()),
        "min_load": min(loads[name] for name in names),
        "max_over_mean": round(max(loads.values()) / mean, 3),
        "leave_moved": len(leave_moves) / buckets,
        # The least a leave can move is what the leaver owned.
        "leave_ideal": loads[leaver] / buckets,
        "leave_only_leavers_buckets": all(source == leaver for _, source, _ in leave_moves)
        and len(leave_moves) == loads[leaver],
        "join_moved": len(join_moves) / buckets,
        "join_ideal": 1 / (workers + 1),
        "join_only_to_joiner": all(target == "joiner" for _, _, target in join_moves),
        "joiner_load": Counter(after_join.values())["joiner"],
        "scratch_first_clockwise": first_clockwise_share(table, names),
        "scratch_join_changed": scratch_changed / buckets,
        "scratch_ms": median_ms(lambda: ring.assign(buckets, names, {}), runs),
        "leave_ms": median_ms(lambda: ring.assign(buckets, survivors, table), runs),
        "join_ms": median_ms(lambda: ring.assign(buckets, joined, table), runs),
    }
    result["join_within_slack"] = len(join_moves) <= JOIN_SLACK * buckets / (workers + 1)
    return result


def rendezvous_ms(workers: int, buckets: int) -> float:
    """Plain rendezvous hashing from scratch, the alternative the ring was chosen over."""
    names = [f"worker-{index}" for index in range(workers)]
    started = time.perf_counter()
    for bucket in range(buckets):
        max(names, key=lambda name, bucket=bucket: ring._score(name, bucket))
    return (time.perf_counter() - started) * 1000


def render_table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'workers':>7} {'buckets':>7} │ {'leave moved':>11} {'leaver':>6} │ {'join moved':>10} {'ideal':>6} │ "
        f"{'max/mean':>8} {'max':>4} {'cap':>4} │ {'scratch ms':>10} {'leave ms':>8} {'join ms':>7}"
    )
    lines = [header, "─" * len(header)]
    for row in rows:
        lines.append(
            f"{row['workers']:>7} {row['buckets']:>7} │ {row['leave_moved']:>11.2%} {row['leave_ideal']:>6.2%} │ "
            f"{row['join_moved']:>10.2%} {row['join_ideal']:>6.2%} │ "
            f"{row['max_over_mean']:>8.2f} {row['max_load']:>4} {row['capacity']:>4} │ "
            f"{row['scratch_ms']:>10.1f} {row['leave_ms']:>8.1f} {row['join_ms']:>7.1f}"
        )
    return "\n".join(lines)


def draw_chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, (moved_ax, load_ax, time_ax) = plt.subplots(1, 3, figsize=(17, 4.8))
    labels = [f"{row['workers']}×{row['buckets']}" for row in rows]
    positions = list(range(len(rows)))
    width = 0.4
    left = [p - width / 2 for p in positions]
    right = [p + width / 2 for p in positions]

    moved_ax.bar(left, [row["leave_moved"] * 100 for row in rows], width, label="leave")
    moved_ax.bar(right, [row["join_moved"] * 100 for row in rows], width, label="join")
    moved_ax.scatter(left, [row["leave_ideal"] * 100 for row in rows], marker="_", s=150, color="black", zorder=3)
    moved_ax.scatter(
        right, [row["join_ideal"] * 100 for row in rows], marker="_", s=150, color="black", zorder=3, label="ideal"
    )
    moved_ax.set_yscale("log")
    moved_ax.set_xticks(positions, labels, rotation=60, ha="right", fontsize=8)
    moved_ax.set_xlabel("workers × buckets")
    moved_ax.set_ylabel("% of buckets moved (log)")
    moved_ax.set_title("Moved by one leave or join")
    moved_ax.legend(fontsize=8)

    load_ax.bar(positions, [row["max_over_mean"] for row in rows], 0.6, color="tab:green", label="max / mean load")
    load_ax.scatter(
        positions,
        [row["capacity"] / (row["buckets"] / row["workers"]) for row in rows],
        marker="_",
        s=150,
        color="tab:red",
        zorder=3,
        label="capacity (ε = 0.25) / mean",
    )
    load_ax.axhline(1, color="black", linewidth=0.8)
    load_ax.set_xticks(positions, labels, rotation=60, ha="right", fontsize=8)
    load_ax.set_xlabel("workers × buckets")
    load_ax.set_ylabel("load / mean load")
    load_ax.set_title("Most loaded worker (max = ceil(B / N))")
    load_ax.legend(fontsize=8)

    for buckets in BUCKET_COUNTS:
        series = [row for row in rows if row["buckets"] == buckets]
        workers = [row["workers"] for row in series]
        (line,) = time_ax.plot(
            workers, [row["scratch_ms"] for row in series], marker="o", label=f"{buckets}, from scratch"
        )
        time_ax.plot(
            workers,
            [max(row["leave_ms"], row["join_ms"]) for row in series],
            marker="x",
            linestyle=":",
            color=line.get_color(),
            label=f"{buckets}, leave or join",
        )
    time_ax.axhline(
        TIME_TARGET_MS, color="tab:red", linestyle="--", linewidth=1, label=f"target ({TIME_TARGET_MS:.0f} ms)"
    )
    time_ax.set_xscale("log")
    time_ax.set_yscale("log")
    time_ax.set_xlabel("workers")
    time_ax.set_ylabel("ms, median of cold runs (log)")
    time_ax.set_title("Time to assign the buckets")
    time_ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure; the median is reported")
    parser.add_argument("--chart", type=Path, help="also write a PNG chart here (needs matplotlib)")
    args = parser.parse_args()

    rows = [measure(workers, buckets, args.runs) for workers in WORKER_COUNTS for buckets in BUCKET_COUNTS]
    largest = rows[-1]
    report = {
        "python": platform.python_version(),
        "vnodes": ring.VNODES,
        "runs": args.runs,
        "rows": rows,
        "rendezvous_scratch_ms": {"workers": 1000, "buckets": 4096, "ms": rendezvous_ms(1000, 4096)},
        "targets": {
            "leave_moves_only_leavers_buckets": all(row["leave_only_leavers_buckets"] for row in rows),
            "join_within_1_1_ideal": all(row["join_within_slack"] and row["join_only_to_joiner"] for row in rows),
            "max_over_mean_above_1_25": [
                (row["workers"], row["buckets"], row["max_over_mean"])
                for row in rows
                if row["max_over_mean"] > BALANCE_TARGET
            ],
            "max_within_capacity": all(row["max_load"] <= row["capacity"] for row in rows),
            "scratch_4096_over_1000_ms": largest["scratch_ms"],
            "scratch_4096_over_1000_under_50_ms": largest["scratch_ms"] < TIME_TARGET_MS,
        },
    }
    sys.stdout.write(json.dumps(report, indent=2) + "\n\n")
    sys.stdout.write(render_table(rows) + "\n")
    sys.stdout.write(
        f"\nrendezvous hashing from scratch, 4096 buckets over 1000 workers: {report['rendezvous_scratch_ms']['ms']:.0f} ms\n"
    )
    if args.chart:
        draw_chart(rows, args.chart)
        sys.stdout.write(f"chart written to {args.chart}\n")


if __name__ == "__main__":
    main()
