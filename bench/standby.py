"""The synchronous standby's cost: drain, pickup and API intake on one server and on a cluster, in one run.

Brings up a Patroni cluster of two PostgreSQL 15 nodes with synchronous
replication (tests/cluster.py: each node in a network namespace of its own,
as deploy/cluster.sh runs it), then runs the drain, pickup and API benchmarks
(bench/drain.py, pickup.py, api.py, as they are, through their own command
lines) against three databases, one after another:

- `single`: the PostgreSQL server given by --single-url (by default the
  local one, on loopback): what the other benchmarks measure;
- `cluster, local commit`: the cluster's primary, through its multi-host
  URL, with `synchronous_commit=local` for the benchmark's connections: the
  same machines and network as below, a commit not waiting for the standby;
- `cluster, synchronous`: the cluster as deployed (docs/operations.md): every
  commit returns once the synchronous standby has it.

The difference between the last two is the standby's own cost; between the
first two, that of the node's network and Patroni's settings. Needs root and
Debian's `patroni`, `etcd-server`, `faketime`, `iproute2` and PostgreSQL 15.
Only 127.0.0.1 and the cluster's own namespaces are contacted.

    sudo .venv/bin/python bench/standby.py [--orders 2000] [--pickup-orders 100] [--api-seconds 5] [--rounds 2]

Each benchmark runs on the three databases in turn, for --rounds rounds, the
order reversed every other round; the table gives each figure's median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import harness

BENCH = harness.ROOT / "bench"
LOCAL_COMMIT = "options=-c%20synchronous_commit%3Dlocal"


def with_database(url: str, name: str) -> str:
    """The same server (or cluster) and options, another database."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def run(script: str, *argv: str) -> dict[str, Any]:
    """One benchmark's JSON result, run as a person would run it."""
    done = subprocess.run(  # noqa: S603 - our own benchmark
        [sys.executable, str(BENCH / script), *argv, "--json-only"],
        cwd=harness.ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(argv)} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(targets: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """Each benchmark on each database in turn, for --rounds rounds, the databases' order
    reversed every other round, so the machine's drift weighs on each alike."""
    benches: dict[str, Any] = {
        "commit": lambda url: commit_latency(url, args.commits),
        "drain": lambda url: run(
            "drain.py",
            "--db",
            "postgres",
            "--pg-url",
            url,
            "--orders",
            str(args.orders),
            "--workers",
            "1,2",
            "--config",
            "default",
        )["results"]["postgres"]["runs"],
        "pickup": lambda url: run(
            "pickup.py", "--db", "postgres", "--pg-url", url, "--orders", str(args.pickup_orders), "--workers", "1"
        )["results"]["postgres"]["runs"],
        "api": lambda url: intake(
            run(
                "api.py",
                "--pg-url",
                with_database(url, urlsplit(url).path.lstrip("/") + "_api"),
                "--seconds",
                str(args.api_seconds),
                "--rate",
                str(args.api_rate),
                "--rows",
                "1000",
                "--repeat",
                "1",
            )
        ),
    }
    benches = {name: bench for name, bench in benches.items() if name in args.benchmarks}
    results: dict[str, Any] = {label: {bench: [] for bench in benches} for label in targets}
    for bench, measure_one in benches.items():
        for number in range(args.rounds):
            labels = list(targets) if number % 2 == 0 else list(reversed(targets))
            for label in labels:
                results[label][bench].append(measure_one(targets[label]))
    return results


def commit_latency(url: str, commits: int) -> dict[str, float]:
    """The cost at its root: one small transaction's commit, one after another, in ms.
    Each waits for the WAL flush, and on the cluster for the standby's too."""
    import psycopg

    database = with_database(url, urlsplit(url).path.lstrip("/") + "_commit")
    admin = with_database(url, "postgres")
    name = urlsplit(database).path.lstrip("/")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    samples = []
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE commits (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
        for _ in range(commits):
            started = time.perf_counter()
            conn.execute("INSERT INTO commits DEFAULT VALUES")
            samples.append((time.perf_counter() - started) * 1000)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    return {
        "commits": commits,
        "p50_ms": round(harness.percentile(samples, 50), 2),
        "p99_ms": round(harness.percentile(samples, 99), 2),
    }


def intake(api: dict[str, Any]) -> dict[str, Any]:
    found = api["results"]["intake"]
    return {key: found[key] for key in ("open_loop", "closed_loop", "max_rate_with_p99_under_target")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--single-url",
        default=harness.DEFAULT_PG_URL,
        help="The single server's database, dropped and re-created (default: %(default)s).",
    )
    p.add_argument("--orders", type=int, default=2000, help="Orders per drain run (default: %(default)s).")
    p.add_argument("--pickup-orders", type=int, default=100, help="Orders per pickup run (default: %(default)s).")
    p.add_argument("--api-seconds", type=float, default=5.0, help="Seconds per API load run (default: %(default)s).")
    p.add_argument("--api-rate", type=float, default=100.0, help="API open-loop orders/s (default: %(default)s).")
    p.add_argument("--commits", type=int, default=500, help="Commits timed one by one (default: %(default)s).")
    p.add_argument(
        "--benchmarks",
        nargs="+",
        choices=("commit", "drain", "pickup", "api"),
        default=["commit", "drain", "pickup", "api"],
        help="Which to run (default: all).",
    )
    p.add_argument("--rounds", type=int, default=2, help="Rounds over the three databases (default: %(default)s).")
    p.add_argument("--json-only", action="store_true", help="Print the JSON result only, no table.")
    args = p.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pizzaqueue.settings")
    import django

    django.setup()
    from tests.cluster import Cluster, missing

    reason = missing()
    if reason is not None:
        raise SystemExit(reason)
    host = harness.machine()
    cluster = Cluster(size=2)
    started = time.monotonic()
    cluster.up()
    up_seconds = time.monotonic() - started
    try:
        multi = cluster.url("pizzaqueue_bench")
        targets = {
            "single": args.single_url,
            "cluster, local commit": f"{multi}&{LOCAL_COMMIT}",
            "cluster, synchronous": multi,
        }
        results = measure(targets, args)
    finally:
        cluster.teardown()
    config = {
        "orders": args.orders,
        "pickup_orders": args.pickup_orders,
        "api_seconds": args.api_seconds,
        "api_rate": args.api_rate,
        "rounds": args.rounds,
        "commits": args.commits,
        "benchmarks": args.benchmarks,
        "nodes": 2,
    }
    print(
        json.dumps(
            {
                "benchmark": "standby",
                "machine": host,
                "config": config,
                "cluster_up_seconds": round(up_seconds, 1),
                "results": results,
            }
        )
    )
    if not args.json_only:
        print()
        print_table(results)


def print_table(results: dict[str, Any]) -> None:
    """Each figure the median over the rounds; a benchmark not run is left out."""
    columns: dict[str, Any] = {
        "commit p50 ms": ("commit", lambda runs: statistics.median(each["p50_ms"] for each in runs)),
        "commit p99 ms": ("commit", lambda runs: statistics.median(each["p99_ms"] for each in runs)),
        "drain 1 w/s": ("drain", lambda runs: _drain(runs, 1)),
        "drain 2 w/s": ("drain", lambda runs: _drain(runs, 2)),
        "pickup p50 ms": ("pickup", lambda runs: statistics.median(each[0]["p50_ms"] for each in runs)),
        "pickup p99 ms": ("pickup", lambda runs: statistics.median(each[0]["p99_ms"] for each in runs)),
        "API closed/s": ("api", lambda runs: _api(runs, "closed_loop", "orders_per_second")),
        "API closed p50 ms": ("api", lambda runs: _api(runs, "closed_loop", "p50_ms")),
        "API open p50 ms": ("api", lambda runs: _api(runs, "open_loop", "p50_ms")),
        "API open p99 ms": ("api", lambda runs: _api(runs, "open_loop", "p99_ms")),
    }
    ran = next(iter(results.values()))
    shown = {title: column for title, column in columns.items() if column[0] in ran}
    rows = [(label, *(figure(r[bench]) for bench, figure in shown.values())) for label, r in results.items()]
    print(harness.table(("database", *shown), rows))


def _drain(runs: list[list[dict[str, Any]]], workers: int) -> float:
    return statistics.median(run["orders_per_s"] for each in runs for run in each if run["workers"] == workers)


def _api(runs: list[dict[str, Any]], loop: str, key: str) -> float:
    return statistics.median(each[loop][key] for each in runs)


if __name__ == "__main__":
    main()
