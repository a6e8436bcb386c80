"""Procrastinate app for the benchmark: `procrastinate --app=bench.peers.procrastinate_tasks.app worker`.

With PEERS_PROCRASTINATE_RECOVERY=1 the workers heartbeat every second, a
worker is stalled after 5 s without one (pizzaqueue's crash-test settings),
and a periodic task retries the jobs of stalled workers every second: the
recipe Procrastinate's documentation gives for jobs whose worker died, since
Procrastinate does not re-run them by itself. Without it, the defaults
(10 s heartbeat, 30 s stalled timeout, no retry task).
"""

from __future__ import annotations

import os

import procrastinate

from bench.peers import jobs

RECOVERY = os.environ.get("PEERS_PROCRASTINATE_RECOVERY") == "1"
HEARTBEAT_INTERVAL = 1.0
STALLED_TIMEOUT = 5.0

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("PEERS_PROCRASTINATE_DSN", "")),
    worker_defaults={"update_heartbeat_interval": HEARTBEAT_INTERVAL, "stalled_worker_timeout": STALLED_TIMEOUT}
    if RECOVERY
    else {},
)


@app.task(name="noop")
def noop() -> None:
    """Does nothing: measures the queue itself."""


@app.task(name="stamp")
def stamp(sent: float) -> None:
    jobs.record_pickup(sent)


@app.task(name="hang_once")
def hang_once(key: str) -> None:
    jobs.hang_once(key)


if RECOVERY:

    @app.periodic(cron="* * * * * *")  # every second (croniter's sixth field)
    @app.task(name="retry_stalled_jobs", queueing_lock="retry_stalled_jobs", pass_context=True)
    async def retry_stalled_jobs(context: procrastinate.JobContext, timestamp: int) -> None:
        stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_TIMEOUT)
        for job in stalled:
            await app.job_manager.retry_job(job)
