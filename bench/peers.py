"""Against the peers: pizzaqueue, Procrastinate, django-tasks-db and Celery, side by side in one run.

Every system runs on this machine in the same run: the three database-backed
queues on the same PostgreSQL (fsync on; a fresh database each, re-created
for every measurement), Celery on the local Redis (database 13, flushed; this
Redis keeps nothing on disk). Every worker is a real OS process started with
the system's own command. For each system:

- drain rate, 1 and 2 workers: noop jobs made available all at once (one
  transaction; for Celery, queued before the workers start consuming), timed
  until none is left;
- intake: noop jobs enqueued one by one, no worker running; then the same
  number from 8 producer processes at once (each its own connection, as
  several web processes);
- pickup latency: one idle worker, jobs enqueued one at a time a fixed gap
  apart; enqueue to start, from the system's own timestamps;
- crash recovery: two workers, one job that hangs on its first run; SIGKILL
  the worker process (group) holding it, then the time until another worker
  has finished it, and whether it finished twice. A system that has not
  finished it within the wait is reported as "never".

Then each system's drain again with its worker as its documentation starts
it, every setting at its default (`OUT_OF_THE_BOX`; `--no-out-of-the-box`
skips it), for a second table beside the best-settings one.

Each system is measured in a child process of this script (Django reads one
settings module per process); the parent prints one JSON object, a table with
the ratios pizzaqueue / peer, and draws the chart.

    python3 bench/peers.py --setup          # .venv-bench: the peers and the project, pinned
    .venv-bench/bin/python bench/peers.py [--quick] [--chart docs/img/peers.png]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import harness

from bench.peers.watch import Watcher

ROOT = harness.ROOT
VENV = ROOT / ".venv-bench"
REQUIREMENTS = ROOT / "bench" / "requirements-peers.txt"
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
# Two runs at once on one machine must not share databases: PEERS_DB_PREFIX and
# PEERS_REDIS_URL give a run its own (the children inherit them).
DB_PREFIX = os.environ.get("PEERS_DB_PREFIX", "peers")
REDIS_URL = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/13")
SYSTEMS = ("pizzaqueue", "procrastinate", "django-tasks-db", "celery")
PEERS = SYSTEMS[1:]
DATABASE_PEERS = ("procrastinate", "django-tasks-db")
VERSIONED = ("Django", "psycopg", "procrastinate", "django-tasks", "django-tasks-db", "celery", "kombu", "redis")

# pizzaqueue's crash-test settings: the bound is HEARTBEAT_TIMEOUT + 1 s.
PQ_CRASH_SETTINGS = {"heartbeat_timeout": 5, "heartbeat_interval": 1, "monitor_interval": 0.5}
PQ_RECOVERY_BOUND = PQ_CRASH_SETTINGS["heartbeat_timeout"] + 1.0
# The peers' worker settings: each the fastest in `--sweep` (see docs/peers.md).
# A child process gets changes with `--set NAME=VALUE`.
WORKER_SETTINGS: dict[str, Any] = {
    # pizzaqueue as bench/drain.py's sweep left it (bench/harness.py).
    "pq_flags": f"--concurrency {harness.CONCURRENCY} --prefetch {harness.PREFETCH}",
    "procrastinate_concurrency": 4,
    "djtasks_conn_max_age": 60,
    "celery_pool": "solo",
    "celery_concurrency": 1,
    "celery_prefetch": 4,
    "celery_acks_late": 1,
}
# Each system's worker as its documentation starts it, every setting at its default:
# `manage.py worker`, `procrastinate worker` (concurrency 1), `manage.py db_worker`
# (Django's CONN_MAX_AGE of 0), `celery worker` (prefork, one process per CPU, prefetch 4,
# acknowledgement on receipt). Their drain rates make the out-of-the-box table.
OUT_OF_THE_BOX: dict[str, dict[str, Any]] = {
    "pizzaqueue": {"pq_flags": ""},
    "procrastinate": {"procrastinate_concurrency": 1},
    "django-tasks-db": {"djtasks_conn_max_age": 0},
    "celery": {
        "celery_pool": "prefork",
        "celery_concurrency": os.cpu_count() or 1,
        "celery_prefetch": 4,
        "celery_acks_late": 0,
    },
}
SWEEP: dict[str, list[dict[str, Any]]] = {
    "procrastinate": [{"procrastinate_concurrency": c} for c in (1, 4, 16)],
    "django-tasks-db": [{"djtasks_conn_max_age": a} for a in (0, 60)],
    "celery": [
        {"celery_pool": "solo", "celery_prefetch": 4},
        {"celery_pool": "solo", "celery_prefetch": 64},
        {"celery_pool": "solo", "celery_prefetch": 4, "celery_acks_late": 0},
        {"celery_pool": "threads", "celery_concurrency": 8, "celery_prefetch": 4},
        {"celery_pool": "prefork", "celery_concurrency": 2, "celery_prefetch": 4},
    ],
}

STOP_TIMEOUT = 10.0
# ANALYZE the job table in the transaction that enqueues a drain's jobs, so that the planner
# knows about the backlog as autovacuum would have told it on a live database (this server
# may run without autovacuum). Without it, Procrastinate and django-tasks-db drain at about
# half their rate. `--no-analyze` turns it off (a child gets it as a flag).
ANALYZE = True


@dataclass(frozen=True)
class Plan:
    """How much each measurement does; every wait has a cap."""

    drain_jobs: int  # the same for every system
    intake_jobs: int
    pickup_jobs: int
    pickup_gap_ms: float
    crash_wait: float
    repeat: int = 1  # drain runs per worker count; the median is reported
    drain_timeout: float = 120.0
    child_timeout: float = 300.0
    ready_timeout: float = 30.0


FULL = Plan(
    drain_jobs=5000,
    intake_jobs=2000,
    pickup_jobs=200,
    pickup_gap_ms=50.0,
    crash_wait=60.0,
    repeat=3,
)
QUICK = Plan(
    drain_jobs=1000,
    intake_jobs=300,
    pickup_jobs=30,
    pickup_gap_ms=50.0,
    crash_wait=20.0,
    child_timeout=150.0,
)


# --- Worker processes -------------------------------------------------------------


class Processes:
    """Worker processes, each in a session of its own (so a SIGKILL of its group
    reaches any children, e.g. a prefork pool), always stopped on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []
        self.logdir = tempfile.mkdtemp(prefix="peers-bench-logs-")

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(Path(self.logdir) / f"{name}.log", "wb")  # noqa: SIM115 - closed once the child has it
        try:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        self.procs.append(proc)
        self.names.append(name)
        return proc

    def check_running(self) -> None:
        for proc, name in zip(self.procs, self.names, strict=True):
            if proc.poll() is not None:
                log = (Path(self.logdir) / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"worker {name} exited with {proc.returncode}:\n{log}")

    def stop(self) -> None:
        """SIGTERM (each system's graceful stop), then SIGKILL past the timeout."""
        for proc in self.procs:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        for proc in self.procs:
            _signal_group(proc, signal.SIGKILL)  # stragglers, and children of a killed parent
            if proc.poll() is None:
                proc.wait()
        for path in Path(self.logdir).glob("*"):
            path.unlink()
        with contextlib.suppress(OSError):
            os.rmdir(self.logdir)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def project_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


class Pg:
    """An autocommit connection to one benchmark database, re-opened after a re-create."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.url = f"{PG_SERVER}/{name}"
        self._conn: Any = None

    def recreate(self) -> None:
        import psycopg
        from psycopg import sql

        self.close()
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))

    def one(self, query: str, params: Any = None) -> Any:
        return self.all(query, params)[0][0]

    def all(self, query: str, params: Any = None) -> list[Any]:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, autocommit=True)
        return self._conn.execute(query, params).fetchall()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def listeners(self) -> int:
        return self.one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query ILIKE '%%LISTEN%%' AND pid <> pg_backend_pid()",
            [self.name],
        )


# --- The systems ------------------------------------------------------------------------


@dataclass
class System:
    """One queue under test: how to reset it, run its workers, enqueue and observe jobs."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)

    def fresh(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def workers(self, count: int, mode: str, plan: Plan) -> Iterator[list[subprocess.Popen[bytes]]]:
        raise NotImplementedError
        yield []

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Around a series of enqueues (opens a client where the system needs one)."""
        yield

    def before_fork(self) -> None:
        """Close the connections a forked producer must not share (a PostgreSQL
        connection closed in a child would end the parent's session too)."""

    def enqueue_batch(self, count: int) -> float:
        """Make `count` noop jobs available at once; returns the time they became available."""
        raise NotImplementedError

    def enqueue_one(self) -> None:
        raise NotImplementedError

    def enqueue_stamped(self) -> None:
        """A job that records its pickup latency (bench.peers.jobs.record_pickup)."""
        raise NotImplementedError

    def unfinished(self) -> bool:
        raise NotImplementedError

    def first_started(self) -> float:
        """When a worker first took one of the drained jobs (epoch seconds)."""
        raise NotImplementedError

    def finished(self) -> int:
        """Noop jobs completed (-1 where the system keeps no count)."""
        return -1

    def pickup_latencies_ms(self) -> list[float]:
        """Pickup latencies from the system's own enqueue and start timestamps, where it keeps them."""
        return []

    def enqueue_hang(self) -> str:
        """The crash-recovery job; returns its key (the name of its marks file)."""
        raise NotImplementedError

    def completions(self, key: str) -> int | None:
        """How many times the system itself recorded the job as succeeded (None: it keeps no record)."""
        return None

    def close(self) -> None:
        pass


class Pizzaqueue(System):
    def __init__(self) -> None:
        super().__init__("pizzaqueue")
        self.db = harness.BenchDatabase("postgres", f"{PG_SERVER}/{DB_PREFIX}_pizzaqueue")
        self.db.__enter__()  # Django in this process, on that database
        self.requests: list[Any] = []
        self.config = {
            "command": f"manage.py worker {WORKER_SETTINGS['pq_flags']}".strip(),
            "wake_up": "LISTEN/NOTIFY",
            "crash_settings": {f"PIZZAQUEUE_{k.upper()}": v for k, v in PQ_CRASH_SETTINGS.items()},
        }

    def fresh(self) -> None:
        self.db.fresh()
        self.requests = harness.order_requests(1)  # validated against the menu just migrated in

    @contextlib.contextmanager
    def workers(self, count: int, mode: str, plan: Plan) -> Iterator[list[subprocess.Popen[bytes]]]:
        handler, settings = harness.NOOP_HANDLER, {}
        if mode == "pickup":
            handler = "bench.peers.pizzaqueue_tasks.stamp"
        elif mode == "crash":
            handler, settings = "bench.peers.pizzaqueue_tasks.hang_once", PQ_CRASH_SETTINGS
        procs = harness.WorkerProcesses(
            self.db,
            count,
            concurrency=None,
            prefetch=None,
            handler=handler,
            extra=WORKER_SETTINGS["pq_flags"].split(),
            **settings,
        )
        procs.env["PYTHONPATH"] = project_env()["PYTHONPATH"]
        with procs:
            yield procs.procs

    def enqueue_batch(self, count: int) -> float:
        from django.db import connection, transaction

        from workers import queue

        requests = harness.order_requests(count)
        with transaction.atomic():
            queue.place_many(requests)
            if ANALYZE:
                with connection.cursor() as cursor:
                    cursor.execute("ANALYZE orders_order")
        return time.time()

    def enqueue_one(self) -> None:
        from workers import queue

        queue.place(self.requests[0])

    def before_fork(self) -> None:
        from django.db import connections

        connections.close_all()

    def enqueue_stamped(self) -> None:
        self.enqueue_one()  # the handler reads the order's created_at

    def unfinished(self) -> bool:
        return harness.unfinished()

    def first_started(self) -> float:
        from django.db.models import Min

        from workers.models import Order

        return Order.objects.aggregate(first=Min("claimed_at"))["first"].timestamp()

    def finished(self) -> int:
        from workers.models import Order

        return Order.objects.filter(status=Order.Status.DONE).count()

    def pickup_latencies_ms(self) -> list[float]:
        from workers.models import Order

        stamps = Order.objects.filter(claimed_at__isnull=False).values_list("created_at", "claimed_at")
        return [(claimed - created).total_seconds() * 1000 for created, claimed in stamps]

    def enqueue_hang(self) -> str:
        from workers import queue

        order, _ = queue.place(self.requests[0])
        return str(order.id)

    def completions(self, key: str) -> int | None:
        from workers.models import OrderEvent

        return OrderEvent.objects.filter(order_id=key, kind=OrderEvent.Kind.DONE).count()

    def close(self) -> None:
        self.db.close()


class Procrastinate(System):
    APP = "bench.peers.procrastinate_tasks.app"

    def __init__(self) -> None:
        super().__init__("procrastinate")
        self.pg = Pg(f"{DB_PREFIX}_procrastinate")
        os.environ["PEERS_PROCRASTINATE_DSN"] = self.pg.url
        from bench.peers import procrastinate_tasks

        self.tasks = procrastinate_tasks
        self.config = {
            "command": f"procrastinate worker --concurrency {WORKER_SETTINGS['procrastinate_concurrency']}",
            "wake_up": "LISTEN/NOTIFY",
            "crash_settings": {
                "update_heartbeat_interval": procrastinate_tasks.HEARTBEAT_INTERVAL,
                "stalled_worker_timeout": procrastinate_tasks.STALLED_TIMEOUT,
                "retry_stalled_jobs": "periodic task, every second",
            },
        }

    def fresh(self) -> None:
        self.pg.recreate()
        with self.tasks.app.open():
            self.tasks.app.schema_manager.apply_schema()

    @contextlib.contextmanager
    def workers(self, count: int, mode: str, plan: Plan) -> Iterator[list[subprocess.Popen[bytes]]]:
        env = project_env(
            PEERS_PROCRASTINATE_DSN=self.pg.url, PEERS_PROCRASTINATE_RECOVERY="1" if mode == "crash" else "0"
        )
        procs = Processes()
        try:
            for n in range(count):
                procs.start(
                    f"peers-{n}",
                    [
                        sys.executable,
                        "-m",
                        "procrastinate",
                        f"--app={self.APP}",
                        "--log-level",
                        "warning",
                        "worker",
                        "--name",
                        f"peers-{n}",
                        "--concurrency",
                        str(WORKER_SETTINGS["procrastinate_concurrency"]),
                    ],
                    env,
                )

            def ready() -> bool:
                procs.check_running()
                registered = self.pg.one("SELECT count(*) FROM procrastinate_workers")
                return registered == count and self.pg.listeners() >= count

            harness.wait_until(ready, plan.ready_timeout, what="procrastinate workers")
            yield procs.procs
        finally:
            procs.stop()

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        with self.tasks.app.open():
            yield

    def enqueue_batch(self, count: int) -> float:
        import psycopg

        with self.tasks.app.open(), psycopg.connect(self.pg.url) as conn:
            # One INSERT statement, in a transaction of the benchmark's own.
            self.tasks.noop.configure(connection=conn).batch_defer(*({} for _ in range(count)))
            if ANALYZE:
                conn.execute("ANALYZE procrastinate_jobs")
            conn.commit()
        return time.time()

    def enqueue_one(self) -> None:
        self.tasks.noop.defer()

    def before_fork(self) -> None:
        self.pg.close()

    def enqueue_stamped(self) -> None:
        self.tasks.stamp.defer(sent=time.time())

    def unfinished(self) -> bool:
        return self.pg.one(
            "SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE task_name = 'noop' AND status IN ('todo', 'doing'))"
        )

    def first_started(self) -> float:
        return float(self.pg.one("SELECT EXTRACT(EPOCH FROM min(at)) FROM procrastinate_events WHERE type = 'started'"))

    def finished(self) -> int:
        return self.pg.one("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'noop' AND status = 'succeeded'")

    def pickup_latencies_ms(self) -> list[float]:
        rows = self.pg.all(
            "SELECT EXTRACT(EPOCH FROM (s.at - d.at)) * 1000 FROM procrastinate_events d"
            " JOIN procrastinate_events s ON s.job_id = d.job_id AND s.type = 'started'"
            " JOIN procrastinate_jobs j ON j.id = d.job_id AND j.task_name = 'stamp'"
            " WHERE d.type = 'deferred'"
        )
        return [float(r[0]) for r in rows]

    def enqueue_hang(self) -> str:
        key = uuid.uuid4().hex
        with self.tasks.app.open():
            self.tasks.hang_once.defer(key=key)
        return key

    def completions(self, key: str) -> int | None:
        return self.pg.one(
            "SELECT count(*) FROM procrastinate_events e JOIN procrastinate_jobs j ON j.id = e.job_id"
            " WHERE j.task_name = 'hang_once' AND e.type = 'succeeded'"
        )

    def close(self) -> None:
        self.pg.close()


class DjangoTasksDb(System):
    WORKER_APP = "peers-db-worker"

    def __init__(self) -> None:
        super().__init__("django-tasks-db")
        self.pg = Pg(f"{DB_PREFIX}_django_tasks_db")
        os.environ.update(PEERS_DJTASKS_DB_URL=self.pg.url, DJANGO_SETTINGS_MODULE="bench.peers.djtasks.settings")
        import django

        django.setup()
        from bench.peers.djtasks import tasks

        self.tasks = tasks
        self.config = {
            "command": "manage.py db_worker --no-startup-delay (interval 1 s, the default)",
            "wake_up": "polling",
            "CONN_MAX_AGE": WORKER_SETTINGS["djtasks_conn_max_age"],
        }

    def _results(self) -> Any:
        from django_tasks_db.models import DBTaskResult

        return DBTaskResult.objects

    def fresh(self) -> None:
        from django.core.management import call_command
        from django.db import connections

        connections.close_all()
        self.pg.recreate()
        call_command("migrate", verbosity=0)

    @contextlib.contextmanager
    def workers(self, count: int, mode: str, plan: Plan) -> Iterator[list[subprocess.Popen[bytes]]]:
        env = project_env(
            PEERS_DJTASKS_DB_URL=self.pg.url,
            DJANGO_SETTINGS_MODULE="bench.peers.djtasks.settings",
            PEERS_DJTASKS_APP=self.WORKER_APP,
            PEERS_DJTASKS_CONN_MAX_AGE=str(WORKER_SETTINGS["djtasks_conn_max_age"]),
        )
        procs = Processes()
        try:
            for n in range(count):
                procs.start(
                    f"peers-{n}",
                    [
                        sys.executable,
                        "-m",
                        "django",
                        "db_worker",
                        "--no-startup-delay",
                        "--no-reload",
                        "--verbosity",
                        "0",
                        "--worker-id",
                        f"peers-{n}",
                    ],
                    env,
                )

            def ready() -> bool:
                procs.check_running()
                return (
                    self.pg.one(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                        [self.pg.name, self.WORKER_APP],
                    )
                    >= count
                )

            harness.wait_until(ready, plan.ready_timeout, what="db_worker processes")
            yield procs.procs
        finally:
            procs.stop()

    def enqueue_batch(self, count: int) -> float:
        from django.db import connection, transaction

        with transaction.atomic():
            for _ in range(count):
                self.tasks.noop.enqueue()
            if ANALYZE:
                with connection.cursor() as cursor:
                    cursor.execute(f"ANALYZE {self._results().model._meta.db_table}")
        return time.time()

    def enqueue_one(self) -> None:
        self.tasks.noop.enqueue()

    def before_fork(self) -> None:
        from django.db import connections

        self.pg.close()
        connections.close_all()

    def enqueue_stamped(self) -> None:
        self.tasks.stamp.enqueue(time.time())

    def unfinished(self) -> bool:
        return self._results().filter(status__in=["READY", "RUNNING"]).exists()

    def first_started(self) -> float:
        from django.db.models import Min

        return self._results().aggregate(first=Min("started_at"))["first"].timestamp()

    def finished(self) -> int:
        return self._results().filter(status="SUCCESSFUL", task_path__endswith=".noop").count()

    def pickup_latencies_ms(self) -> list[float]:
        stamps = self._results().filter(started_at__isnull=False).values_list("enqueued_at", "started_at")
        return [(started - enqueued).total_seconds() * 1000 for enqueued, started in stamps]

    def enqueue_hang(self) -> str:
        key = uuid.uuid4().hex
        self.tasks.hang_once.enqueue(key)
        return key

    def completions(self, key: str) -> int | None:
        return self._results().filter(status="SUCCESSFUL", task_path__endswith=".hang_once").count()

    def close(self) -> None:
        from django.db import connections

        connections.close_all()
        self.pg.close()


class Celery(System):
    IDLE_QUEUE = "peers-idle"

    def __init__(self) -> None:
        super().__init__("celery")
        os.environ["PEERS_CELERY_BROKER"] = REDIS_URL
        import redis

        from bench.peers import celery_tasks

        self.tasks = celery_tasks
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.config = {
            "command": f"celery worker {' '.join(self.pool())} --without-gossip --without-mingle --without-heartbeat",
            "broker": f"{REDIS_URL} (no persistence: save and appendonly off)",
            "acks_late": bool(WORKER_SETTINGS["celery_acks_late"]),
            "prefetch_multiplier": WORKER_SETTINGS["celery_prefetch"],
            "visibility_timeout_s": 3600,
        }

    def pool(self) -> list[str]:
        pool = ["--pool", WORKER_SETTINGS["celery_pool"]]
        return pool if pool[1] == "solo" else [*pool, "--concurrency", str(WORKER_SETTINGS["celery_concurrency"])]

    def fresh(self) -> None:
        self.redis.flushdb()

    @contextlib.contextmanager
    def workers(self, count: int, mode: str, plan: Plan) -> Iterator[list[subprocess.Popen[bytes]]]:
        env = project_env(
            PEERS_CELERY_BROKER=REDIS_URL,
            PEERS_CELERY_PREFETCH=str(WORKER_SETTINGS["celery_prefetch"]),
            PEERS_CELERY_ACKS_LATE=str(WORKER_SETTINGS["celery_acks_late"]),
        )
        # Draining workers start on an empty queue and are switched to the full one at once.
        queue = self.IDLE_QUEUE if mode == "drain" else self.tasks.QUEUE
        self.names = [f"peers-{n}@bench" for n in range(count)]
        procs = Processes()
        try:
            for n, name in enumerate(self.names):
                procs.start(
                    f"peers-{n}",
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "bench.peers.celery_tasks",
                        "worker",
                        *self.pool(),
                        "--loglevel",
                        "WARNING",
                        "-n",
                        name,
                        "-Q",
                        queue,
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                    ],
                    env,
                )

            def ready() -> bool:
                procs.check_running()
                return len(self.tasks.app.control.ping(destination=self.names, timeout=0.5)) == count

            harness.wait_until(ready, plan.ready_timeout, what="celery workers")
            yield procs.procs
        finally:
            procs.stop()

    def enqueue_batch(self, count: int) -> float:
        for _ in range(count):
            self.tasks.noop.apply_async()
        available = time.time()
        replies = self.tasks.app.control.add_consumer(self.tasks.QUEUE, destination=self.names, reply=True, timeout=5)
        if len(replies) != len(self.names):
            raise RuntimeError(f"add_consumer: {replies}")
        # A worker adds the queue to its BRPOP after the current one times out (up to a second,
        # an artefact of switching queues): the drain starts at the first message taken.
        harness.wait_until(
            lambda: self.redis.llen(self.tasks.QUEUE) < count, 10, interval=0.001, what="celery to start"
        )
        self._first = time.time()
        return available

    def first_started(self) -> float:
        return self._first

    def enqueue_one(self) -> None:
        self.tasks.noop.delay()

    def enqueue_stamped(self) -> None:
        self.tasks.stamp.delay(time.time())

    def _pending(self) -> bool:
        # With late acknowledgement a task stays in `unacked` until it has run.
        return bool(self.redis.llen(self.tasks.QUEUE) or self.redis.hlen("unacked"))

    def unfinished(self) -> bool:
        # Twice, 20 ms apart: a message is briefly in neither list between BRPOP and its `unacked` entry.
        if self._pending():
            return True
        time.sleep(0.02)
        return self._pending()

    def enqueue_hang(self) -> str:
        key = uuid.uuid4().hex
        self.tasks.hang_once.delay(key)
        return key

    def close(self) -> None:
        self.redis.flushdb()
        self.redis.close()


SYSTEM_CLASSES: dict[str, Callable[[], System]] = {
    "pizzaqueue": Pizzaqueue,
    "procrastinate": Procrastinate,
    "django-tasks-db": DjangoTasksDb,
    "celery": Celery,
}


# --- The measurements, the same for every system ------------------------------------------


def drain(system: System, workers: int, jobs: int, plan: Plan) -> dict[str, Any]:
    system.fresh()
    with system.workers(workers, "drain", plan):
        available = system.enqueue_batch(jobs)
        ended = harness.wait_until(
            lambda: not system.unfinished(),
            plan.drain_timeout,
            interval=0.01,
            what=f"{system.name} to drain {jobs} jobs",
        )
    # Timed from the first job taken: the wait for the first one is pickup latency, measured
    # on its own (and for a polling worker it is up to one poll interval).
    first = max(system.first_started(), available)  # Procrastinate stamps a transaction's start
    seconds = ended - first
    finished = system.finished()
    return {
        "workers": workers,
        "jobs": jobs,
        "seconds": round(seconds, 3),
        "jobs_per_s": harness.rate(jobs, seconds),
        "first_taken_after_ms": round((first - available) * 1000, 1),
        "jobs_per_s_from_available": harness.rate(jobs, ended - available),
        "finished": finished,
        "all_finished": finished in (jobs, -1),
    }


def drain_median(system: System, workers: int, plan: Plan) -> dict[str, Any]:
    runs = [drain(system, workers, plan.drain_jobs, plan) for _ in range(plan.repeat)]
    median = sorted(runs, key=lambda r: r["jobs_per_s"])[len(runs) // 2]
    return {**median, "repeats": [r["jobs_per_s"] for r in runs], "all_finished": all(r["all_finished"] for r in runs)}


def intake(system: System, jobs: int) -> dict[str, Any]:
    system.fresh()
    latencies = []
    with system.session():
        system.enqueue_one()  # warm the connection up
        started = time.perf_counter()
        for _ in range(jobs):
            t = time.perf_counter()
            system.enqueue_one()
            latencies.append((time.perf_counter() - t) * 1000)
        seconds = time.perf_counter() - started
    return {
        "jobs": jobs,
        "seconds": round(seconds, 3),
        "jobs_per_s": harness.rate(jobs, seconds),
        "p50_ms": round(harness.percentile(latencies, 50), 3),
        "p99_ms": round(harness.percentile(latencies, 99), 3),
    }


PRODUCERS = 8


def _produce(system: System, jobs: int, start: Any, ready: Any, out: Any) -> None:
    """One producer process: enqueue its jobs one by one, from the common start."""
    with system.session():
        system.enqueue_one()  # connect and warm up outside the timed part
        ready.release()
        start.wait()
        t = time.perf_counter()
        for _ in range(jobs):
            system.enqueue_one()
        out.put(time.perf_counter() - t)


def intake_producers(system: System, jobs: int, producers: int = PRODUCERS) -> dict[str, Any]:
    """`jobs` noop jobs enqueued one by one from `producers` processes at once (forked from
    this one, each with connections of its own), timed from the common start to the last."""
    system.fresh()
    each = jobs // producers
    system.before_fork()
    seconds, slowest = harness.forked_producers(producers, _produce, (system, each))
    return {
        "producers": producers,
        "jobs": each * producers,
        "seconds": round(seconds, 3),
        "jobs_per_s": harness.rate(each * producers, seconds),
        "slowest_producer_s": round(slowest, 3),
    }


def pickup(system: System, jobs: int, gap_ms: float, plan: Plan) -> dict[str, Any]:
    """From just before the enqueue call to the start of the job's code, for every system
    the same way; the system's own timestamps (where it keeps them) in `own_timestamps`."""
    from bench.peers import jobs as job

    system.fresh()
    with system.workers(1, "pickup", plan), system.session():
        started = time.perf_counter()
        for n in range(jobs):
            system.enqueue_stamped()
            delay = started + (n + 1) * gap_ms / 1000 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        harness.wait_until(lambda: len(job.read_pickups()) >= jobs, 30, what=f"{system.name} pickups")
        latencies = [s * 1000 for s in job.read_pickups()]
        own = system.pickup_latencies_ms()
    result = {"workers": 1, "jobs": jobs, "gap_ms": gap_ms, **_percentiles(latencies)}
    result["own_timestamps"] = _percentiles(own) if own else None
    return result


def _percentiles(latencies: list[float]) -> dict[str, float]:
    return {
        **{f"p{p}_ms": round(harness.percentile(latencies, p), 2) for p in (50, 95, 99)},
        "max_ms": round(max(latencies), 2),
    }


def crash(system: System, plan: Plan) -> dict[str, Any]:
    """Two workers, one job that hangs; SIGKILL its holder, wait for another worker to finish it."""
    from bench.peers import jobs as job

    system.fresh()
    with system.workers(2, "crash", plan) as procs:
        key = system.enqueue_hang()
        harness.wait_until(lambda: job.read_marks(key), plan.ready_timeout, what=f"{system.name} to start the job")
        holder = job.read_marks(key)[0][1]
        group = os.getpgid(holder)
        victim = next(p for p in procs if p.pid == group)
        time.sleep(0.5)  # let the holder settle into the job (its claim committed, a heartbeat or two)
        killed_at = time.time()
        os.killpg(group, signal.SIGKILL)
        victim.wait()

        def finished() -> bool:
            return any(what == "done" for what, *_ in job.read_marks(key))

        try:
            harness.wait_until(finished, plan.crash_wait, interval=0.01, what="recovery")
            recovered = True
            time.sleep(1.0)  # long enough to see a second completion, if there were one
        except TimeoutError:
            recovered = False
        marks = job.read_marks(key)
        completions = system.completions(key)
    starts = [(pid, at) for what, pid, at in marks if what == "start"]
    dones = [(pid, at) for what, pid, at in marks if what == "done"]
    restarted = [at for pid, at in starts if pid != holder]
    result = {
        "waited_s": plan.crash_wait,
        "recovered": recovered,
        "restarted_after_s": round(restarted[0] - killed_at, 3) if restarted else None,
        "recovered_after_s": round(dones[0][1] - killed_at, 3) if dones else None,
        "runs_started": len(starts),
        "runs_finished": len(dones),
        "finished_by_holder": any(pid == holder for pid, _ in dones),
        "queue_completions": completions,
    }
    result["ran_twice"] = len(dones) > 1 or (completions or 0) > 1
    return result


def measure(name: str, plan: Plan, only_drain: bool = False) -> dict[str, Any]:
    """Every measurement of one system (or only the drain), in this (child) process."""
    marks = tempfile.mkdtemp(prefix="peers-bench-marks-")
    os.environ["PEERS_MARKS"] = marks
    load = harness.machine()["loadavg_1min_at_start"]
    system = SYSTEM_CLASSES[name]()
    try:
        result: dict[str, Any] = {"config": system.config, "loadavg_1min_at_start": load}
        result["drain"] = [drain_median(system, w, plan) for w in (1, 2)]
        if only_drain:
            return result
        result["intake"] = intake(system, plan.intake_jobs)
        producers = intake_producers(system, plan.intake_jobs)
        result["intake_producers"] = {
            **producers,
            "of_one_producer": round(producers["jobs_per_s"] / result["intake"]["jobs_per_s"], 2),
        }
        result["pickup"] = pickup(system, plan.pickup_jobs, plan.pickup_gap_ms, plan)
        result["crash"] = crash(system, plan)
    finally:
        system.close()
        for path in Path(marks).glob("*"):
            path.unlink()
        os.rmdir(marks)
    return result


# --- The run: every system, one table, one chart ----------------------------------------------


def run_child(name: str, args: argparse.Namespace, plan: Plan, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Measure one system in a child process of this script; an error is reported, not raised."""
    argv = [
        sys.executable,
        __file__,
        "--system",
        name,
        "--json-only",
        "--repeat",
        str(plan.repeat),
        *(["--quick"] if args.quick else []),
        *([] if args.analyze else ["--no-analyze"]),
        *extra,
    ]
    started = time.monotonic()
    try:
        out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True, timeout=plan.child_timeout)
        result = json.loads(out.stdout)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result["wall_s"] = round(time.monotonic() - started, 1)
    print(f"# {name} {' '.join(extra)}: {result['wall_s']} s", file=sys.stderr)
    return result


def sweep(args: argparse.Namespace, plan: Plan) -> None:
    """Drain rates of each peer under a few worker settings, to pick the fastest for the comparison."""
    host = harness.machine()
    runs = []
    for name in (s for s in args.systems if s in SWEEP):
        for variant in SWEEP[name]:
            sets = tuple(f"--set={k}={v}" for k, v in variant.items())
            result = run_child(name, args, plan, ("--only-drain", *sets))
            runs.append({"system": name, "settings": variant, **result})
    print(
        json.dumps(
            {
                "benchmark": "peers-sweep",
                "config": {"plan": asdict(plan), "analyze": args.analyze, **host},
                "runs": runs,
            }
        )
    )
    rows = [
        (
            r["system"],
            " ".join(f"{k}={v}" for k, v in r["settings"].items()),
            *((r["drain"][0]["jobs_per_s"], r["drain"][1]["jobs_per_s"]) if "drain" in r else ("error", "error")),
        )
        for r in runs
    ]
    print()
    print(harness.table(("system", "settings", "1 worker jobs/s", "2 workers jobs/s"), rows))


def run_children(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    return {name: run_child(name, args, plan) for name in args.systems}


def run_out_of_the_box(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    """Each system's drain with its worker started as its documentation starts it."""
    results = {}
    slow = replace(plan, child_timeout=plan.child_timeout * 2)  # django-tasks-db reconnects for every task
    for name in args.systems:
        sets = tuple(f"--set={k}={v}" for k, v in OUT_OF_THE_BOX[name].items())
        results[name] = run_child(name, args, slow, ("--only-drain", *sets))
    return results


def out_of_the_box_rows(results: dict[str, Any], best: dict[str, Any], systems: list[str]) -> list[list[object]]:
    """One row per system: its out-of-the-box command and drain rates, and pizzaqueue's
    out-of-the-box rates over them (and over its own best-settings rates)."""
    pq = results.get("pizzaqueue", {})
    rows: list[list[object]] = []
    for name in systems:
        r = results[name]
        if "error" in r:
            rows.append([name, "error", "-", "-", "-", "-"])
            continue
        rates = [r["drain"][i]["jobs_per_s"] for i in (0, 1)]
        ratios = [_ratio(pq["drain"][i]["jobs_per_s"], rates[i]) if "drain" in pq else "-" for i in (0, 1)]
        rows.append([name, r["config"]["command"], *rates, *ratios])
    if "drain" in pq and "drain" in best.get("pizzaqueue", {}):
        tuned = best["pizzaqueue"]
        rows.append(
            [
                "pizzaqueue, best settings",
                tuned["config"]["command"],
                *(tuned["drain"][i]["jobs_per_s"] for i in (0, 1)),
                *(_ratio(pq["drain"][i]["jobs_per_s"], tuned["drain"][i]["jobs_per_s"]) for i in (0, 1)),
            ]
        )
    return rows


def source() -> dict[str, Any]:
    """The commit measured, and whether the project's code differed from it."""
    git = shutil.which("git")
    if git is None:
        return {"commit": None, "project_code_modified": None}
    head = subprocess.run([git, "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(
        [git, "status", "--porcelain", "--", "orders", "workers", "pizzaqueue"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {"commit": head, "project_code_modified": bool(dirty)}


def environment() -> dict[str, Any]:
    import psycopg
    import redis

    versions = {}
    for dist in VERSIONED:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    with psycopg.connect(f"{PG_SERVER}/postgres") as conn:
        pg = {
            s: conn.execute(f"SHOW {s}").fetchone()[0]
            for s in ("server_version", "fsync", "synchronous_commit", "shared_buffers", "autovacuum")
        }
    r = redis.Redis.from_url(REDIS_URL)
    try:
        info = r.info("server")
        redis_cfg = {"version": info.get("redis_version"), **r.config_get("save"), **r.config_get("appendonly")}
    finally:
        r.close()
    return {"versions": versions, "postgresql": pg, "redis": redis_cfg, "source": source()}


METRICS: tuple[tuple[str, str, Callable[[dict[str, Any]], float | None], bool], ...] = (
    ("drain, 1 worker", "jobs/s", lambda r: r["drain"][0]["jobs_per_s"], True),
    ("drain, 2 workers", "jobs/s", lambda r: r["drain"][1]["jobs_per_s"], True),
    ("intake, one by one", "jobs/s", lambda r: r["intake"]["jobs_per_s"], True),
    (f"intake, {PRODUCERS} producers", "jobs/s", lambda r: r["intake_producers"]["jobs_per_s"], True),
    ("pickup p50", "ms", lambda r: r["pickup"]["p50_ms"], False),
    ("pickup p95", "ms", lambda r: r["pickup"]["p95_ms"], False),
    ("crash recovery", "s", lambda r: r["crash"]["recovered_after_s"], False),
)


def _value(result: dict[str, Any], get: Callable[[dict[str, Any]], float | None]) -> float | None:
    if "error" in result:
        return None
    return get(result)


def table_rows(results: dict[str, Any], systems: list[str]) -> list[list[object]]:
    """One row per metric: each system's figure, then pizzaqueue / peer (when pizzaqueue was measured)."""
    peers = [s for s in systems if s != "pizzaqueue"] if "pizzaqueue" in systems else []
    rows: list[list[object]] = []
    for label, unit, get, _ in METRICS:
        row: list[object] = [f"{label} ({unit})"]
        row += [_cell(results[name], label, _value(results[name], get)) for name in systems]
        base = _value(results["pizzaqueue"], get) if peers else None
        for name in peers:
            value = _value(results[name], get)
            row.append(_ratio(base, value))
        rows.append(row)
    twice = ["-" if "error" in results[n] else ("YES" if results[n]["crash"]["ran_twice"] else "no") for n in systems]
    rows.append(["crash: finished twice", *twice, *("" for _ in peers)])
    return rows


def _ratio(base: float | None, value: float | None) -> str:
    if base is None or not value:
        return "-"
    ratio = base / value
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.4f}"


def _cell(result: dict[str, Any], label: str, value: float | None) -> object:
    if "error" in result:
        return "error"
    if value is None and label == "crash recovery":
        return f"never (>{result['crash']['waited_s']:.0f} s)"
    return value if value is not None else "-"


def drain_goals(pq: dict[str, Any], peers: dict[str, Any], label: str) -> dict[str, Any]:
    """pizzaqueue's drain (`pq`, one run's result) against the best database peer (x5) and Celery (x2)."""
    out: dict[str, Any] = {}
    for i, workers in enumerate((1, 2)):
        mine = pq["drain"][i]["jobs_per_s"]
        db_best = max(
            (peers[p]["drain"][i]["jobs_per_s"] for p in DATABASE_PEERS if p in peers and "error" not in peers[p]),
            default=None,
        )
        if db_best:
            out[f"drain_{workers}w{label}_vs_best_db_peer"] = {
                "target": 5.0,
                "ratio": round(mine / db_best, 2),
                "met": mine >= 5 * db_best,
            }
        if "celery" in peers and "error" not in peers["celery"]:
            cel = peers["celery"]["drain"][i]["jobs_per_s"]
            out[f"drain_{workers}w{label}_vs_celery"] = {
                "target": 2.0,
                "ratio": round(mine / cel, 2),
                "met": mine >= 2 * cel,
            }
    return out


def goals(results: dict[str, Any], boxed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The issue's targets for pizzaqueue, against what was measured.

    With the out-of-the-box runs (`boxed`), pizzaqueue's defaults are held
    against each peer both out of the box and at its best setting, and against
    80 % of pizzaqueue's own best-settings rate.
    """
    pq = results.get("pizzaqueue")
    if not pq or "error" in pq:
        return {}
    out = drain_goals(pq, results, "")
    default = (boxed or {}).get("pizzaqueue")
    if default and "error" not in default:
        out |= drain_goals(default, boxed or {}, "_default_vs_default")
        out |= drain_goals(default, results, "_default_vs_best")
        for i, workers in enumerate((1, 2)):
            mine, tuned = default["drain"][i]["jobs_per_s"], pq["drain"][i]["jobs_per_s"]
            out[f"drain_{workers}w_default_vs_own_best"] = {
                "target": 0.8,
                "ratio": round(mine / tuned, 2),
                "met": mine >= 0.8 * tuned,
            }
    # Enqueue call to the job's code starting (as for every system), then pizzaqueue's own
    # claimed_at - created_at (bench/pickup.py's definition).
    for suffix, pickup in (("", pq["pickup"]), ("_at_claim", pq["pickup"]["own_timestamps"])):
        for pct, target in ((50, 5.0), (95, 10.0)):
            measured = pickup[f"p{pct}_ms"]
            out[f"pickup_p{pct}_ms{suffix}"] = {"target": target, "measured": measured, "met": measured <= target}
    # Intake one by one at 1.2 x the best database peer's, and pickup p50 at Celery's, in the same run.
    db_peers = [results[n]["intake"]["jobs_per_s"] for n in DATABASE_PEERS if "intake" in results.get(n, {})]
    if db_peers:
        ratio = pq["intake"]["jobs_per_s"] / max(db_peers)
        out["intake_vs_best_db_peer"] = {"target": 1.2, "ratio": round(ratio, 2), "met": ratio >= 1.2}
    celery = results.get("celery", {})
    if "pickup" in celery:
        measured, theirs = pq["pickup"]["p50_ms"], celery["pickup"]["p50_ms"]
        out["pickup_p50_vs_celery"] = {"target": theirs, "measured": measured, "met": measured <= theirs}
    rec = pq["crash"]
    out["crash_recovery_s"] = {
        "target": PQ_RECOVERY_BOUND,
        "measured": rec["recovered_after_s"],
        "ran_twice": rec["ran_twice"],
        "met": rec["recovered"] and rec["recovered_after_s"] <= PQ_RECOVERY_BOUND and not rec["ran_twice"],
    }
    return out


def chart(results: dict[str, Any], boxed: dict[str, Any], systems: list[str], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"pizzaqueue": "#c0392b", "procrastinate": "#2e86c1", "django-tasks-db": "#27ae60", "celery": "#8e8e8e"}
    ok = [s for s in systems if "error" not in results[s]]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0][0]
    width = 0.8 / len(ok)
    # Best settings, then (hatched) out of the box, each at 1 and 2 workers.
    groups = [(results, 0), (results, 1)]
    labels = ["1 worker\nbest", "2 workers\nbest"]
    if boxed:
        groups += [(boxed, 0), (boxed, 1)]
        labels += ["1 worker\nout of the box", "2 workers\nout of the box"]
    for i, name in enumerate(ok):
        xs, values, hatches = [], [], []
        for g, (source, n) in enumerate(groups):
            run = source.get(name, {})
            if "drain" in run:
                xs.append(g + i * width)
                values.append(run["drain"][n]["jobs_per_s"])
                hatches.append("//" if source is boxed else "")
        bars = ax.bar(xs, values, width, label=name, color=colors[name])
        for bar, hatch in zip(bars, hatches, strict=True):
            bar.set_hatch(hatch)
        ax.bar_label(bars, fmt="%.0f", fontsize=6, rotation=90, padding=2)
    ax.set_xticks([g + width * (len(ok) - 1) / 2 for g in range(len(groups))], labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylim(top=ax.get_ylim()[1] * 8)  # room for the labels and the legend above the bars
    ax.set_title("Drain rate, noop jobs (jobs/s, log scale; hatched: out of the box)")
    ax.legend(fontsize=7, ncol=4, loc="upper center")

    ax = axes[0][1]
    for i, (key, hatch) in enumerate((("intake", ""), ("intake_producers", "//"))):
        values = [results[n][key]["jobs_per_s"] if key in results[n] else 0.0 for n in ok]
        bars = ax.bar(
            [x + i * 0.4 for x in range(len(ok))],
            values,
            0.4,
            color=[colors[n] for n in ok],
            hatch=hatch,
            label="one producer" if i == 0 else f"{PRODUCERS} producers",
        )
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks([x + 0.2 for x in range(len(ok))], ok, fontsize=8)
    ax.set_title(f"Intake, one by one: 1 and {PRODUCERS} producers (jobs/s, higher is better)")
    ax.legend(fontsize=7)

    ax = axes[1][0]
    for i, pct in enumerate((50, 95)):
        values = [results[n]["pickup"][f"p{pct}_ms"] for n in ok]
        bars = ax.bar(
            [x + i * 0.4 for x in range(len(ok))],
            values,
            0.4,
            label=f"p{pct}",
            color=[colors[n] for n in ok],
            alpha=1.0 if pct == 50 else 0.55,
        )
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks([x + 0.2 for x in range(len(ok))], ok)
    ax.set_yscale("log")
    ax.set_title("Pickup, enqueue call to job start (ms, log scale; p50 dark, p95 light)")

    ax = axes[1][1]
    labels, values, hatches = [], [], []
    for name in ok:
        rec = results[name]["crash"]
        labels.append(name)
        values.append(rec["recovered_after_s"] if rec["recovered"] else rec["waited_s"])
        hatches.append("" if rec["recovered"] else "//")
    bars = ax.bar(labels, values, color=[colors[n] for n in ok])
    for bar, hatch, name in zip(bars, hatches, ok, strict=True):
        bar.set_hatch(hatch)
        rec = results[name]["crash"]
        text = f"{rec['recovered_after_s']:.1f} s" if rec["recovered"] else f"never\n(>{rec['waited_s']:.0f} s)"
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    ax.axhline(
        PQ_RECOVERY_BOUND,
        color=colors["pizzaqueue"],
        linestyle="--",
        linewidth=1,
        label=f"pizzaqueue's bound: heartbeat timeout + 1 s = {PQ_RECOVERY_BOUND:.0f} s",
    )
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Crash recovery: SIGKILL to done elsewhere (s, lower is better)")
    ax.set_ylim(0, max(values) * 1.25 if values else 1)
    fig.suptitle(f"pizzaqueue against its peers — {subtitle}", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- Set-up and the command line ------------------------------------------------------------


def setup() -> None:
    """Create .venv-bench with the peers (bench/requirements-peers.txt) and the project itself."""
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-r", str(REQUIREMENTS), "-e", str(ROOT)], check=True)
    check = "import procrastinate, celery, django_tasks, django_tasks_db, matplotlib, psycopg, redis, orders"
    subprocess.run([str(VENV / "bin" / "python"), "-c", check], check=True, cwd=ROOT)
    print(f"ready: {VENV}/bin/python bench/peers.py")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setup", action="store_true", help="Create .venv-bench with the peers and the project, then exit.")
    p.add_argument("--quick", action="store_true", help="Smaller runs (about a third of the time).")
    p.add_argument(
        "--systems",
        type=lambda v: v.split(","),
        default=list(SYSTEMS),
        help="Comma-separated subset of: " + ", ".join(SYSTEMS),
    )
    p.add_argument("--chart", type=Path, default=None, help="Write the chart here (PNG), e.g. docs/img/peers.png.")
    p.add_argument(
        "--sweep", action="store_true", help="Drain rates of the peers under a few worker settings, then exit."
    )
    p.add_argument("--system", choices=SYSTEMS, help=argparse.SUPPRESS)  # a child: measure one system
    p.add_argument("--only-drain", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="Leave the planner without statistics on the drained jobs (see ANALYZE).",
    )
    p.add_argument("--repeat", type=int, default=None, help="Drain runs per worker count (default: 3, 1 with --quick).")
    p.add_argument(
        "--no-out-of-the-box",
        dest="out_of_the_box",
        action="store_false",
        help="Skip the drains with each worker as its documentation starts it.",
    )
    p.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)  # a child: NAME=VALUE
    p.add_argument("--json-only", action="store_true", help="Print the JSON only, no table.")
    args = p.parse_args()
    if args.setup:
        setup()
        return
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown systems: {', '.join(sorted(unknown))}")
    plan = QUICK if args.quick else FULL
    if args.repeat:
        plan = replace(plan, repeat=args.repeat)
    global ANALYZE
    ANALYZE = args.analyze
    if args.system:
        for item in args.set:
            key, value = item.split("=", 1)
            WORKER_SETTINGS[key] = type(WORKER_SETTINGS[key])(value)
        print(json.dumps(measure(args.system, plan, args.only_drain)))
        return
    if args.sweep:
        sweep(args, plan)
        return

    host = harness.machine()
    started = time.monotonic()
    watcher = Watcher()
    watcher.start()
    try:
        results = run_children(args, plan)
        boxed = run_out_of_the_box(args, plan) if args.out_of_the_box else {}
    finally:
        watcher.stop()
    host["loadavg_1min_at_end"] = Path("/proc/loadavg").read_text().split()[0]
    host["loadavg_1min_max_seen"] = watcher.max_load
    host["other_processes_seen"] = sorted(watcher.others)
    config = {
        "quick": args.quick,
        "plan": asdict(plan),
        "analyze": args.analyze,
        **host,
        **environment(),
        "pizzaqueue_recovery_bound_s": PQ_RECOVERY_BOUND,
        "wall_s": round(time.monotonic() - started, 1),
    }
    summary = goals(results, boxed)
    systems = [s for s in SYSTEMS if s in args.systems]
    print(
        json.dumps(
            {
                "benchmark": "peers",
                "config": config,
                "results": results,
                "out_of_the_box": boxed,
                "goals": summary,
            }
        )
    )
    if not args.json_only:
        peers = [s for s in systems if s != "pizzaqueue"] if "pizzaqueue" in systems else []
        print()
        print("Best settings:")
        print(harness.table(["metric", *systems, *(f"pq/{s}" for s in peers)], table_rows(results, systems)))
        if boxed:
            print()
            print("Out of the box (drain, jobs/s; pq = pizzaqueue's own out-of-the-box rate):")
            headers = ["system", "worker command", "1 worker", "2 workers", "pq / it, 1 worker", "pq / it, 2 workers"]
            print(harness.table(headers, out_of_the_box_rows(boxed, results, systems)))
        for name, goal in summary.items():
            print(f"goal {name}: {'met' if goal['met'] else 'MISSED'} {goal}")
        if host["other_processes_seen"]:
            print(
                f"note: other processes ran meanwhile (max load {watcher.max_load}):",
                *host["other_processes_seen"],
                sep="\n  ",
            )
    if args.chart:
        load = f"load {host['loadavg_1min_at_start']} at start, {host['loadavg_1min_max_seen']} at most"
        chart(
            results,
            boxed,
            systems,
            args.chart,
            f"{host['cpus']} CPUs, {load}, PostgreSQL fsync on" + (", quick" if args.quick else ""),
        )
        print(f"chart: {args.chart}", file=sys.stderr)


if __name__ == "__main__":
    main()
