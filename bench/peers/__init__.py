"""What bench/peers.py runs in each system's worker processes.

- `jobs`: what the pickup and crash-recovery jobs do, the same for every system;
- `pizzaqueue_tasks`: pizzaqueue handlers that call them;
- `procrastinate_tasks`: a Procrastinate app and its tasks;
- `celery_tasks`: a Celery app on Redis and its tasks;
- `djtasks`: a minimal Django project for django-tasks-db and its `db_worker`.

Settings come from environment variables that bench/peers.py sets for each
process (this is benchmark scaffolding, not project code).
"""
