"""Measure API intake through a real daphne on PostgreSQL, and admin/API lists at a million orders.

    python bench/api.py [--seconds 20] [--connections 50] [--rate 400] [--servers 2] [--rows 1000000] [--json-only]

1. Re-creates the PostgreSQL database `pizzaqueue_bench_api` and migrates it.
2. Starts `--servers` daphne processes (`daphne -v 0 --fd N
   pizzaqueue.asgi:application`) on one listening socket on 127.0.0.1, with
   DEBUG off, the create throttle off (PIZZAQUEUE_API_CREATE_RATE=""), and
   database connections from psycopg's pool where psycopg-pool is installed
   (DATABASE_URL ...?pool=true, DATABASE_CONN_MAX_AGE=0).
3. Drives `POST /api/orders/` from a second process (asyncio + aiohttp, one
   token, `--connections` keep-alive connections, every request with its own
   Idempotency-Key), each run after a short warm-up:
   - open loop in 5 s steps of 50 orders/s up to `--rate` (or two steps in a
     row over target), to find the highest rate still answered with p99 under 100 ms;
   - open loop at `--rate` orders/s for `--seconds`: latency is measured from each request's
     scheduled start, so queueing behind a slow server counts against it;
   - closed loop for `--seconds`: every connection posts again as soon as it
     is answered, which gives the saturation throughput.
   Each run also reports the CPU per request of the servers, of PostgreSQL
   and of the load generator, and how busy the machine was (other load on a
   shared machine lowers the rates).
   Every 201 is then checked against the database (confirmed means committed).
4. Bulk-inserts `--rows` orders with INSERT ... SELECT generate_series, runs
   ANALYZE, and times logged-in requests through daphne: the admin order
   changelist (plain, filtered, searched) and the API's list and stats.

Only 127.0.0.1 is contacted; every loop is bounded in time. Prints one JSON
object, then a table.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import harness

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/pizzaqueue_bench_api"
SECRET_KEY = "pizzaqueue-bench-api-not-secret"  # noqa: S105 - throwaway key for a throwaway database
PIZZAS = ["margherita", "marinara", "diavola", "quattro-formaggi", "capricciosa", "funghi"]
TARGET_RATE = 400.0
TARGET_P99_MS = 100.0
TARGET_ADMIN_MS = 300.0
WARMUP_SECONDS = 3.0
# Open-loop steps (short) to find the highest rate still answered with p99 under target.
SWEEP_RATES = (50, 100, 150, 200, 250, 300, 350, 400, 450, 500)
SWEEP_SECONDS = 5.0


def percentile(values: list[float], pct: float) -> float:
    """As harness.percentile, but NaN for a run that got no answers at all."""
    return harness.percentile(values, pct) if values else float("nan")


def order_body(rng: random.Random) -> dict[str, Any]:
    items = [
        {"pizza": rng.choice(PIZZAS), "size": rng.choice(["small", "medium", "large"]), "quantity": rng.randint(1, 3)}
        for _ in range(rng.randint(1, 3))
    ]
    return {
        "items": items,
        "area": f"area-{rng.randint(1, 200)}",
        "priority": rng.randint(0, 9),
        "customer_name": "Bench",
        "address": "1 Bench Street",
        "phone": "+15550000000",
    }


async def drive(
    base: str,
    token: str,
    seconds: float,
    connections: int,
    rate: float | None,
    seed: int,
    warmup: float = WARMUP_SECONDS,
) -> dict[str, Any]:
    """POST orders for `seconds` (after a warm-up), open loop at `rate` or closed loop if None."""
    import aiohttp

    rng = random.Random(seed)
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    sent = [0]
    created: list[str] = []
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    url = f"{base}/api/orders/"

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post(scheduled: float, measured: bool) -> None:
            body = json.dumps(order_body(rng)).encode()
            try:
                async with session.post(url, data=body, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}) as r:
                    payload = await r.read()
                    code = str(r.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                code, payload = type(exc).__name__, b""
            sent[0] += 1
            if measured:
                latencies.append(time.perf_counter() - scheduled)
                statuses[code] = statuses.get(code, 0) + 1
                if code == "201":
                    created.append(json.loads(payload)["id"])

        started = time.perf_counter()
        measure_from = started + warmup
        stop_at = measure_from + seconds
        if rate:
            tasks = []
            n = 0
            while True:
                scheduled = started + n / rate
                if scheduled >= stop_at:
                    break
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(post(scheduled, scheduled >= measure_from)))
                n += 1
            await asyncio.gather(*tasks)
        else:

            async def loop() -> None:
                while (now := time.perf_counter()) < stop_at:
                    await post(now, now >= measure_from)

            await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.perf_counter() - measure_from

    ms = [x * 1000 for x in latencies]
    cpu = time.process_time()  # this driver's own CPU, warm-up included (as is requests_total)
    return {
        "mode": f"open loop at {rate:g}/s" if rate else "closed loop",
        "connections": connections,
        "seconds": round(elapsed, 2),
        "requests": len(ms),
        "statuses": statuses,
        "orders_per_second": round(statuses.get("201", 0) / elapsed, 1),
        "p50_ms": round(percentile(ms, 50), 1),
        "p90_ms": round(percentile(ms, 90), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1) if ms else None,
        "created_ids": created,
        "requests_total": sent[0],
        "driver_cpu_ms_per_request": round(cpu * 1000 / max(sent[0], 1), 2),
    }


# --- The database, the server, Django in this process --------------------------------------


# Under ASGI every request runs in a fresh thread, so persistent per-thread
# connections pile up ("too many clients"): connections come from psycopg's
# pool where it is installed, else one per request.
POOL = importlib.util.find_spec("psycopg_pool") is not None


def child_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    pooled = url + ("&" if "?" in url else "?") + "pool=true" if POOL else url
    env.update(
        DATABASE_URL=pooled,
        DATABASE_CONN_MAX_AGE="0",
        DEBUG="false",
        SECURE_SSL_REDIRECT="false",  # plain HTTP on 127.0.0.1
        SECRET_KEY=SECRET_KEY,
        DJANGO_SETTINGS_MODULE="pizzaqueue.settings",
        PIZZAQUEUE_API_CREATE_RATE="",
        LOG_LEVEL="WARNING",
    )
    return env


def fresh_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=child_env(url), check=True)


class Daphne:
    """`count` daphne processes serving the project from one listening socket
    (handed over with --fd, as a process manager would), always stopped on exit.

    One daphne runs all Python on one core (the GIL), so more cores need more
    processes; they share the port, and the kernel spreads connections.
    """

    def __init__(self, url: str, count: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.sock.set_inheritable(True)
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.logs = []
        self.procs = []
        for _ in range(count):
            log = tempfile.NamedTemporaryFile(prefix="pizzaqueue-bench-daphne-", suffix=".log", delete=False)  # noqa: SIM115
            self.logs.append(log)
            # -v 0: no access log line per request.
            self.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "daphne",
                        "-v",
                        "0",
                        "--fd",
                        str(self.sock.fileno()),
                        "pizzaqueue.asgi:application",
                    ],
                    cwd=ROOT,
                    env=child_env(url),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=(self.sock.fileno(),),
                )
            )

    def wait_ready(self, token: str, timeout: float = 30.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        request = urllib.request.Request(f"{self.base}/api/stats/", headers={"Authorization": f"Token {token}"})  # noqa: S310
        answered = 0
        while answered < 3 * len(self.procs):
            for proc, log in zip(self.procs, self.logs, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"daphne exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 - 127.0.0.1 only
                    answered += response.status == 200
                    continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("daphne did not answer in time")
            time.sleep(0.1)

    def errors(self) -> int:
        """Server errors logged by any of the processes."""
        return sum(Path(log.name).read_text(errors="replace").count("Internal Server Error") for log in self.logs)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.sock.close()
        for log in self.logs:
            log.close()
            Path(log.name).unlink(missing_ok=True)


def setup_django(url: str) -> None:
    os.environ.update(child_env(url))
    import django

    django.setup()


def _stat(pid: int | str) -> tuple[str, float]:
    """A process's name and its user + system CPU seconds (all its threads), from /proc."""
    name, fields = Path(f"/proc/{pid}/stat").read_text().split(" (", 1)[1].rsplit(")", 1)
    values = fields.split()
    return name, (int(values[11]) + int(values[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pids: list[int]) -> float:
    """CPU of these processes, in seconds."""
    return sum(_stat(pid)[1] for pid in pids)


def postgres_cpu_seconds() -> dict[int, float]:
    """CPU of every PostgreSQL server process now running, by pid (the pooled
    connections' backends live through a run)."""
    seen = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            name, cpu = _stat(proc.name)
        except OSError:
            continue  # gone meanwhile
        if name == "postgres":
            seen[int(proc.name)] = cpu
    return seen


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def run_load(
    server: Daphne,
    token: str,
    args: argparse.Namespace,
    rate: float | None,
    seconds: float | None = None,
    warmup: float = WARMUP_SECONDS,
) -> dict[str, Any]:
    """The load generator runs in its own process, so it never shares a CPU lock with this one.

    Also reports the servers' CPU per request (a figure the machine's other
    load does not change much) and how busy the whole machine was.
    """
    seconds = seconds or args.seconds
    argv = [
        sys.executable,
        __file__,
        "--drive",
        server.base,
        "--token",
        token,
        "--seconds",
        str(seconds),
        "--connections",
        str(args.connections),
        "--rate",
        str(rate or 0),
        "--warmup",
        str(warmup),
    ]
    pids = [p.pid for p in server.procs]
    cpu_before, (busy_before, total_before) = process_cpu_seconds(pids), machine_cpu()
    postgres_before = postgres_cpu_seconds()
    load_before = os.getloadavg()[0]
    out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True, timeout=seconds + 120)
    busy, total = machine_cpu()
    postgres = sum(cpu - postgres_before.get(pid, 0.0) for pid, cpu in postgres_cpu_seconds().items())
    result = json.loads(out.stdout)
    cpu = process_cpu_seconds(pids) - cpu_before
    requests = max(result.pop("requests_total"), 1)
    result["server_cpu_ms_per_request"] = round(cpu * 1000 / requests, 2)
    result["postgres_cpu_ms_per_request"] = round(postgres * 1000 / requests, 2)
    result["machine_busy_pct"] = round(100 * (busy - busy_before) / max(total - total_before, 1), 1)
    result["load_average_before"] = round(load_before, 2)
    return result


def check_committed(ids: list[str]) -> bool:
    """Every order confirmed with a 201 is in the database, with its placed event."""
    from workers.models import Order, OrderEvent

    found = Order.objects.filter(pk__in=ids).count()
    placed = OrderEvent.objects.filter(order_id__in=ids, kind=OrderEvent.Kind.PLACED).count()
    return found == placed == len(set(ids))


def bulk_insert(rows: int, placed_by: int) -> float:
    """`rows` orders in one INSERT ... SELECT: 90% done, 5% cancelled, 1% failed, 4% queued, over the last weeks,
    all placed by `placed_by`, so the integrator's own list is read through its scope at a million rows."""
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO orders_order (
                id, status, kind, items, note, customer_name, area, bucket, priority, rank, eligible_at,
                attempts, max_attempts, stage, estimated_seconds, last_error, cancel_reason, request_hash,
                created_at, finished_at, placed_by_id, placed_by_session)
            SELECT gen_random_uuid(),
                   CASE WHEN g %% 100 < 90 THEN 'done' WHEN g %% 100 < 95 THEN 'cancelled'
                        WHEN g %% 100 < 96 THEN 'failed' ELSE 'queued' END,
                   'delivery', '[{"pizza": "margherita", "size": "medium", "quantity": 1}]'::jsonb, '', 'Bench',
                   'area-' || (g %% 500), g %% 256, g %% 10,
                   (extract(epoch FROM t.at) * 1000000)::bigint - (g %% 10) * 60000000, t.at,
                   CASE WHEN g %% 100 < 96 THEN 1 ELSE 0 END, 3, '', 40, '', '', '',
                   t.at, CASE WHEN g %% 100 < 96 THEN t.at + interval '2 minutes' END, %s, ''
            FROM generate_series(1, %s) AS g,
                 LATERAL (SELECT now() - interval '1 hour' - (%s - g) * interval '1 second' AS at) AS t
            """,
            [placed_by, rows, rows],
        )
        cursor.execute("ANALYZE orders_order")
    return time.perf_counter() - started


def time_gets(base: str, paths: dict[str, str], headers: dict[str, str], repeat: int) -> dict[str, dict[str, float]]:
    """Median and worst of `repeat` sequential GETs per path (after one untimed warm-up)."""
    import urllib.request

    results = {}
    for label, path in paths.items():
        samples = []
        for n in range(repeat + 1):
            request = urllib.request.Request(base + path, headers=headers)  # noqa: S310 - 127.0.0.1 only
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - 127.0.0.1 only
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"{path}: {response.status}")
            if n:
                samples.append((time.perf_counter() - started) * 1000)
        results[label] = {"median_ms": round(statistics.median(samples), 1), "max_ms": round(max(samples), 1)}
    return results


def measure(args: argparse.Namespace) -> dict[str, Any]:
    fresh_database(args.pg_url)
    setup_django(args.pg_url)
    from django.contrib.auth.models import Group, User
    from django.test import Client
    from rest_framework.authtoken.models import Token

    from workers.models import Order

    integrator = User.objects.create_user("bench-integrator")
    integrator.groups.add(Group.objects.get(name="integrators"))  # the role that may place orders
    token = Token.objects.create(user=integrator).key
    operator = User.objects.create_superuser("bench-operator", email="")
    client = Client()
    client.force_login(operator)
    session = client.cookies["sessionid"].value

    server = Daphne(args.pg_url, args.servers)
    try:
        server.wait_ready(token)
        sweep = []
        for rate in SWEEP_RATES:
            # The first step warms the servers up (imports, the pool) as the long runs do.
            warmup = WARMUP_SECONDS if not sweep else 1.0
            step = run_load(server, token, args, rate, seconds=SWEEP_SECONDS, warmup=warmup)
            step.pop("created_ids")
            sweep.append(
                {k: step[k] for k in ("mode", "orders_per_second", "p50_ms", "p99_ms", "server_cpu_ms_per_request")}
            )
            # Two misses in a row end the sweep: one stall of a shared machine should not.
            missed = [s["p99_ms"] >= TARGET_P99_MS for s in sweep[-2:]]
            if (len(missed) == 2 and all(missed)) or rate >= args.rate:
                break
        sustained = [s["orders_per_second"] for s in sweep if s["p99_ms"] < TARGET_P99_MS]
        open_loop = run_load(server, token, args, args.rate)
        closed_loop = run_load(server, token, args, None)
        committed = check_committed(open_loop.pop("created_ids") + closed_loop.pop("created_ids"))
        server_errors = server.errors()
        placed = Order.objects.count()

        insert_seconds = bulk_insert(args.rows, integrator.pk)
        total = Order.objects.count()
        some_id = Order.objects.filter(status="queued").values_list("pk", flat=True).first()
        admin = time_gets(
            server.base,
            {
                "admin orders": "/admin/workers/order/",
                "admin orders page 50": "/admin/workers/order/?p=50",
                "admin orders status=queued": "/admin/workers/order/?status__exact=queued",
                "admin orders status=failed": "/admin/workers/order/?status__exact=failed",
                "admin orders priority=5": "/admin/workers/order/?priority=5",
                "admin orders search id": f"/admin/workers/order/?q={some_id}",
                "admin events": "/admin/workers/orderevent/",
                "admin buckets": "/admin/workers/bucket/",
            },
            {"Cookie": f"sessionid={session}"},
            args.repeat,
        )
        api = time_gets(
            server.base,
            {
                "api orders": "/api/orders/",
                "api orders status=done": "/api/orders/?status=done",
                "api orders priority=5": "/api/orders/?priority=5",
                "api buckets": "/api/buckets/",
                "api stats": "/api/stats/",
            },
            {"Authorization": f"Token {token}"},
            args.repeat,
        )
    finally:
        server.stop()

    return {
        "intake": {
            "open_loop": open_loop,
            "closed_loop": closed_loop,
            "sweep": sweep,
            "max_rate_with_p99_under_target": max(sustained, default=0.0),
            "orders_placed": placed,
            "every_201_committed": committed,
            "server_errors_logged": server_errors,
        },
        "million": {"orders_in_table": total, "bulk_insert_seconds": round(insert_seconds, 1), **admin, **api},
        "targets": {
            "orders_per_second": TARGET_RATE,
            "p99_ms": TARGET_P99_MS,
            "admin_list_ms": TARGET_ADMIN_MS,
            "intake_met": open_loop["orders_per_second"] >= TARGET_RATE * 0.98 and open_loop["p99_ms"] < TARGET_P99_MS,
            "admin_met": admin["admin orders"]["median_ms"] < TARGET_ADMIN_MS,
        },
    }


def print_table(result: dict[str, Any]) -> None:
    intake = result["intake"]
    print(
        f"{'intake (POST /api/orders/)':34} {'orders/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'srv cpu ms':>10} {'pg cpu ms':>9} {'drv cpu ms':>10} {'busy %':>7}  statuses"
    )
    for key in ("open_loop", "closed_loop"):
        r = intake[key]
        print(
            f"{r['mode'] + ', ' + str(r['connections']) + ' conns':34} {r['orders_per_second']:>9.1f} {r['p50_ms']:>8.1f} "
            f"{r['p90_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} {r['server_cpu_ms_per_request']:>10.2f} "
            f"{r['postgres_cpu_ms_per_request']:>9.2f} {r['driver_cpu_ms_per_request']:>10.2f} "
            f"{r['machine_busy_pct']:>7.1f}  {r['statuses']}"
        )
    print(
        f"every 201 committed: {intake['every_201_committed']}; server errors logged: {intake['server_errors_logged']}"
    )
    print(
        "open-loop sweep (5 s steps): "
        + ", ".join(
            f"{s['mode'].split()[-1]} -> {s['orders_per_second']:g}/s p99 {s['p99_ms']:g} ms" for s in intake["sweep"]
        )
    )
    print(
        f"highest rate answered with p99 < {result['targets']['p99_ms']:g} ms: {intake['max_rate_with_p99_under_target']:g} orders/s"
    )
    print()
    million = result["million"]
    print(f"{'with ' + format(million['orders_in_table'], ',') + ' orders':34} {'median ms':>9} {'max ms':>8}")
    for label, r in million.items():
        if isinstance(r, dict):
            print(f"{label:34} {r['median_ms']:>9.1f} {r['max_ms']:>8.1f}")
    targets = result["targets"]
    print()
    print(
        f"targets: >= {targets['orders_per_second']:g} orders/s with p99 < {targets['p99_ms']:g} ms: "
        f"{'met' if targets['intake_met'] else 'NOT met'}; admin list < {targets['admin_list_ms']:g} ms: "
        f"{'met' if targets['admin_met'] else 'NOT met'}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pg-url", default=DEFAULT_PG_URL, help="Database to drop and re-create (default: %(default)s).")
    p.add_argument("--seconds", type=float, default=20.0, help="Measured seconds per load run (default: %(default)s).")
    p.add_argument("--connections", type=int, default=50, help="Concurrent connections (default: %(default)s).")
    p.add_argument("--rate", type=float, default=TARGET_RATE, help="Open-loop orders/s (default: %(default)s).")
    p.add_argument("--warmup", type=float, default=WARMUP_SECONDS, help=argparse.SUPPRESS)
    p.add_argument("--servers", type=int, default=2, help="daphne processes on the one port (default: %(default)s).")
    p.add_argument("--rows", type=int, default=1_000_000, help="Orders bulk-inserted for the list timings.")
    p.add_argument("--repeat", type=int, default=10, help="Timed requests per list (default: %(default)s).")
    p.add_argument("--json-only", action="store_true", help="Print the JSON result only.")
    p.add_argument("--drive", metavar="BASE_URL", help=argparse.SUPPRESS)
    p.add_argument("--token", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.drive:
        result = asyncio.run(
            drive(args.drive, args.token, args.seconds, args.connections, args.rate or None, 1, args.warmup)
        )
        print(json.dumps(result))
        return
    result = measure(args)
    config = {k: getattr(args, k) for k in ("seconds", "connections", "rate", "servers", "rows", "repeat")}
    config["db_pool"] = POOL
    print(json.dumps({"benchmark": "api", "config": config, "results": result}))
    if not args.json_only:
        print()
        print_table(result)


if __name__ == "__main__":
    main()
