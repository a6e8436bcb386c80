"""What the benchmarks share: a fresh database, Django in this process, real
worker processes, polling with a deadline, percentiles and the report.

A benchmark process talks to one engine only (Django reads the settings
once), so `--db both` runs the script again for each engine and merges the
JSON the children print.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ENGINES = ("postgres", "sqlite")
DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/pizzaqueue_bench"
SECRET_KEY = "pizzaqueue-bench-not-secret"  # noqa: S105 - throwaway key for a throwaway database
NOOP_HANDLER = "orders.handlers.noop"
# The best fixed worker configuration, chosen with `drain.py --explore` (see
# docs/performance.md), which the drain and the peers run beside the defaults
# (adaptive claiming, which drains faster still).
CONCURRENCY = 4
PREFETCH = 100


# --- Command line and the per-engine fan-out ------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--db", choices=(*ENGINES, "both"), default="both", help="Engine to measure (default: both).")
    p.add_argument(
        "--pg-url",
        default=DEFAULT_PG_URL,
        help="PostgreSQL database to drop and re-create for every run (default: %(default)s).",
    )
    p.add_argument("--json-only", action="store_true", help="Print the JSON result only, no table.")
    return p


def run_per_engine(args: argparse.Namespace, measure: Callable[[BenchDatabase], dict[str, Any]]) -> dict[str, Any]:
    """Measure one engine here, or each engine in a child process of this script."""
    _exit_on_sigterm()
    if args.db != "both":
        with BenchDatabase(args.db, args.pg_url) as db:
            return {args.db: measure(db)}
    results: dict[str, Any] = {}
    for engine in ENGINES:
        argv = [a for a in sys.argv[1:] if a != "--json-only"]
        argv = _replace_flag(argv, "--db", engine) + ["--json-only"]
        child = subprocess.Popen([sys.executable, sys.argv[0], *argv], stdout=subprocess.PIPE, text=True)
        try:
            out, _ = child.communicate()
        except BaseException:
            # SIGTERM, not SIGKILL: the child stops its worker processes on the way out.
            child.terminate()
            child.wait(30)
            raise
        if child.returncode:
            raise subprocess.CalledProcessError(child.returncode, child.args)
        results.update(json.loads(out)["results"])
    return results


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `finally` blocks stop the worker processes."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _replace_flag(argv: list[str], flag: str, value: str) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == flag:
            skip = True
            continue
        if arg.startswith(flag + "="):
            continue
        out.append(arg)
    return [*out, flag, value]


# --- The benchmark database ---------------------------------------------------------


class BenchDatabase:
    """A throwaway database: `pizzaqueue_bench` on PostgreSQL, a temp file for SQLite.

    `fresh()` drops and re-creates it and runs `manage.py migrate`, so every
    run starts from an empty queue and the house menu.
    """

    def __init__(self, engine: str, pg_url: str = DEFAULT_PG_URL) -> None:
        self.engine = engine
        self._tmpdir: str | None = None
        if engine == "postgres":
            self.url = pg_url
            parts = urlsplit(pg_url)
            self.name = parts.path.lstrip("/")
            self.admin_url = urlunsplit(parts._replace(path="/postgres"))
        else:
            self._tmpdir = tempfile.mkdtemp(prefix="pizzaqueue-bench-")
            self.path = Path(self._tmpdir) / "bench.sqlite3"
            self.url = f"sqlite:///{self.path}"
            self.name = str(self.path)

    def __enter__(self) -> BenchDatabase:
        setup_django(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        from django.db import connections

        connections.close_all()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def fresh(self) -> None:
        from django.db import connections

        connections.close_all()
        if self.engine == "postgres":
            import psycopg
            from psycopg import sql

            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        else:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=child_env(self.url), check=True)


def child_env(url: str, **settings: object) -> dict[str, str]:
    """Environment for a project process: the database, production-like flags, and PIZZAQUEUE_* overrides."""
    env = dict(os.environ)
    env.update(DATABASE_URL=url, DEBUG="false", SECRET_KEY=SECRET_KEY, DJANGO_SETTINGS_MODULE="pizzaqueue.settings")
    env.setdefault("SECURE_SSL_REDIRECT", "false")  # plain HTTP on 127.0.0.1
    env.setdefault("LOG_LEVEL", "WARNING")
    env.update({f"PIZZAQUEUE_{k.upper()}": str(v) for k, v in settings.items()})
    return env


class Site:
    """daphne on a socket bound here (no race for the port) and named kitchen processes
    (`kitchens`: name -> extra `manage.py worker` arguments), with their logs in a temp
    folder; ready once the menu page answers and every kitchen is live."""

    def __init__(
        self, db: BenchDatabase, kitchens: dict[str, list[str]], collectstatic: bool = False, **settings: object
    ) -> None:
        self.db = db
        self.kitchens = kitchens
        self.collectstatic = collectstatic
        self.env = child_env(db.url, **settings)
        self.logdir = Path(tempfile.mkdtemp(prefix="pizzaqueue-bench-site-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.port = 0

    def __enter__(self) -> Site:
        if self.collectstatic:
            # With DEBUG off, as in production, the pages' scripts are served from STATIC_ROOT.
            command = [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"]
            subprocess.run(command, cwd=ROOT, env=self.env, check=True)  # noqa: S603 - our own command
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        daphne = [sys.executable, "-m", "daphne", "--fd", str(listener.fileno()), "pizzaqueue.asgi:application"]
        self._start("daphne", daphne, pass_fds=[listener.fileno()])
        listener.close()
        for name, args in self.kitchens.items():
            self._start(name, [sys.executable, "manage.py", "worker", "--name", name, *args])
        wait_until(self._ready, 60, interval=0.1, what="daphne and the kitchens")
        return self

    def _start(self, name: str, argv: list[str], pass_fds: list[int] | None = None) -> None:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs.append(
            subprocess.Popen(  # noqa: S603 - our own commands
                argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=pass_fds or (),
                start_new_session=True,
            )
        )
        log.close()

    def _ready(self) -> bool:
        from workers.models import Worker

        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[:5]} exited:\n{self.logs()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=5) as response:  # noqa: S310
                serving = response.status == 200
        except OSError:
            return False
        return serving and Worker.objects.live().filter(name__in=list(self.kitchens)).count() == len(self.kitchens)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in self.logdir.glob("*.log"))

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def setup_django(url: str) -> None:
    """Point this process at the benchmark database and start Django (once per process)."""
    os.environ.update(child_env(url))
    import django

    django.setup()


# --- Orders -------------------------------------------------------------------------------


def order_requests(count: int) -> list[Any]:
    """`count` validated delivery orders, routed by their own ids (spread over all buckets)."""
    from orders.intake import clean_order_request
    from orders.menu import HOUSE_MENU

    templates = [
        clean_order_request(
            {
                "items": [{"pizza": slug, "size": "medium", "quantity": 1}],
                "customer_name": "Bench",
                "address": "1 Bench Street",
                "phone": "+15550000000",
            }
        )
        for slug, *_ in HOUSE_MENU
    ]
    return [templates[n % len(templates)] for n in range(count)]


def unfinished() -> bool:
    from workers.models import Order

    return Order.objects.filter(status__in=[Order.Status.QUEUED, Order.Status.PREPARING]).exists()


def check_exactly_once(expected: int) -> dict[str, Any]:
    """Every order done, with exactly one `done` event each and no lost lease."""
    from django.db.models import Count

    from workers.models import Order, OrderEvent

    events = dict(OrderEvent.objects.values_list("kind").annotate(n=Count("id")).values_list("kind", "n"))
    done_orders = Order.objects.filter(status=Order.Status.DONE).count()
    distinct_done = OrderEvent.objects.filter(kind=OrderEvent.Kind.DONE).values("order_id").distinct().count()
    report = {
        "orders_done": done_orders,
        "done_events": events.get(OrderEvent.Kind.DONE, 0),
        "orders_with_done_event": distinct_done,
        "claimed_events": events.get(OrderEvent.Kind.CLAIMED, 0),
        "lease_lost_events": events.get(OrderEvent.Kind.LEASE_LOST, 0),
    }
    report["exactly_once"] = (
        done_orders == expected
        and report["done_events"] == expected
        and distinct_done == expected
        and report["lease_lost_events"] == 0
    )
    return report


# --- Worker processes ---------------------------------------------------------------


def worker_flags(concurrency: int | None, prefetch: int | None) -> list[str]:
    """`manage.py worker` flags; None leaves the project's default (the out-of-the-box kitchen)."""
    flags = []
    if concurrency is not None:
        flags += ["--concurrency", str(concurrency)]
    if prefetch is not None:
        flags += ["--prefetch", str(prefetch)]
    return flags


class WorkerProcesses:
    """Real `manage.py worker` processes, always stopped on exit (SIGTERM, then SIGKILL)."""

    def __init__(
        self,
        db: BenchDatabase,
        count: int,
        *,
        concurrency: int | None,
        prefetch: int | None,
        handler: str = NOOP_HANDLER,
        extra: Sequence[str] = (),
        **settings: object,
    ) -> None:
        self.db = db
        self.names = [f"bench-{n}" for n in range(count)]
        self.argv = ["--handler", handler, *worker_flags(concurrency, prefetch), *extra]
        self.env = child_env(db.url, kitchen_speed=0, **settings)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logdir = tempfile.mkdtemp(prefix="pizzaqueue-bench-logs-")

    def __enter__(self) -> WorkerProcesses:
        _exit_on_sigterm()
        atexit.register(self.kill)
        try:
            for name in self.names:
                log = open(Path(self.logdir) / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
                proc = subprocess.Popen(
                    [sys.executable, "manage.py", "worker", "--name", name, *self.argv],
                    cwd=ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C at the terminal reaches the benchmark only
                )
                log.close()
                self.procs.append(proc)
            self.wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every worker is registered (so the ring is settled) and, on
        PostgreSQL, listening for NOTIFY."""
        from workers.models import Bucket, Worker

        def ready() -> bool:
            self._check_running()
            live = set(Worker.objects.live().filter(name__in=self.names).values_list("pk", flat=True))
            if len(live) != len(self.names):
                return False
            owners = set(Bucket.objects.values_list("owner_id", flat=True))
            return owners == live and self._listening() == len(self.names)

        try:
            wait_until(ready, timeout, what="workers to register")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self._logs()}") from None

    def _listening(self) -> int:
        if self.db.engine != "postgres":
            return len(self.names)
        from django.db import connection

        apps = [f"pizzaqueue-listen-{name}"[:63] for name in self.names]
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = ANY(%s) AND query ILIKE 'LISTEN%%'",
                [apps],
            )
            return cursor.fetchone()[0]

    def _check_running(self) -> None:
        for proc, name in zip(self.procs, self.names, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited with {proc.returncode}:\n{self._logs()}")

    def _logs(self) -> str:
        return "\n".join(
            f"--- {name}:\n" + (Path(self.logdir) / f"{name}.log").read_text(errors="replace")[-2000:]
            for name in self.names
        )

    def stop(self, timeout: float = 15.0) -> list[int | None]:
        """Graceful stop (SIGTERM), as an operator would; SIGKILL past the timeout."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        codes = [proc.returncode for proc in self.procs]
        self.kill()
        atexit.unregister(self.kill)
        shutil.rmtree(self.logdir, ignore_errors=True)
        return codes

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# --- Waiting and statistics -------------------------------------------------------------


def forked_producers(count: int, target: Callable[..., None], args: tuple[Any, ...]) -> tuple[float, float]:
    """Run `target(*args, start, ready, out)` in `count` processes forked from this one
    (they inherit what is loaded; close shared connections first), all at once: each
    releases `ready` once warm, waits for `start`, and puts its own seconds on `out`.
    Returns the seconds from the common start to the last one's end, and the slowest's own."""
    ctx = multiprocessing.get_context("fork")
    start, ready, out = ctx.Event(), ctx.Semaphore(0), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, start, ready, out)) for _ in range(count)]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            if not ready.acquire(timeout=60):
                raise TimeoutError("producers did not start")
        began = time.perf_counter()
        start.set()
        for proc in procs:
            proc.join(120)
        wall = time.perf_counter() - began
        slowest = max(out.get(timeout=5) for _ in procs)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    return wall, slowest


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.02, what: str = "") -> float:
    """Poll with a deadline; returns the wall-clock time the predicate first held."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (pct in 0..100) of a non-empty sample."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of an empty sample")
    rank = (len(data) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("inf")


# --- Output -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures depend on: CPUs, and the load other processes put on them at the start."""
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else None
    return {"cpus": os.cpu_count(), "loadavg_1min_at_start": load, "python": sys.version.split()[0]}


def report(
    benchmark: str,
    args: argparse.Namespace,
    results: dict[str, Any],
    config: dict[str, Any],
    rows: Iterable[Sequence[object]],
    headers: Sequence[str],
) -> None:
    """Print one JSON object, then (unless --json-only) a readable table."""
    print(json.dumps({"benchmark": benchmark, "config": config, "results": results}))
    if not args.json_only:
        print()
        print(table(headers, rows))


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Plain-text table: numbers right-aligned, text left-aligned."""
    rows = [list(row) for row in rows]
    numeric = [bool(rows) and all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]
    cells = [[str(h) for h in headers], *([_fmt(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
