#!/usr/bin/env bash
# A local PostgreSQL cluster for pizzaqueue, managed by Patroni with etcd, until Ctrl-C:
# every node in a network namespace of its own (so its link can be cut), synchronous
# replication, the database created and migrated, and the DATABASE_URL to use printed.
# Needs root (namespaces) and Debian's packages; see docs/operations.md,
# "Running on a PostgreSQL cluster".
#
#   sudo deploy/cluster.sh [--nodes 3]
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v patroni >/dev/null 2>&1 || missing+=(patroni)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 || missing+=(faketime)
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python=.venv/bin/python
[ -x "$python" ] || python=python3
# tests/cluster.py builds on the test helpers, which need Django set up first.
export DJANGO_SETTINGS_MODULE=pizzaqueue.settings PYTHON="$python"
exec "$python" -c "import django; django.setup(); from tests.cluster import main; main()" "$@"
