"""DATABASE_URL names a PostgreSQL cluster in libpq's multi-host form, and every
connection made from it (Django's, the LISTEN ones) tries the nodes in turn."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import dj_database_url
import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from tests.base import ROOT
from workers.database_url import CLUSTER_OPTIONS, parse
from workers.listening import listen_params

CLUSTER = "postgres://queue:secret@db1:5432,db2:5433/pizzaqueue?target_session_attrs=read-write"


def test_a_multi_host_url_keeps_every_node_in_libpqs_comma_form() -> None:
    parsed = parse(CLUSTER)

    assert parsed["ENGINE"] == "django.db.backends.postgresql"
    assert (parsed["HOST"], parsed["PORT"]) == ("db1,db2", "5432,5433")
    assert (parsed["NAME"], parsed["USER"], parsed["PASSWORD"]) == ("pizzaqueue", "queue", "secret")
    assert parsed["OPTIONS"] == {**CLUSTER_OPTIONS, "target_session_attrs": "read-write"}


def test_a_cluster_url_can_override_the_cluster_timeouts_and_omit_ports() -> None:
    parsed = parse("postgres://u@[fd00::1],10.0.0.2:6432/db?connect_timeout=9&pool=true", conn_max_age=0)

    assert (parsed["HOST"], parsed["PORT"]) == ("fd00::1,10.0.0.2", "5432,6432")
    assert parsed["OPTIONS"]["connect_timeout"] == 9
    assert parsed["OPTIONS"]["pool"] is True


def test_a_single_host_url_is_read_exactly_as_before() -> None:
    url = "postgres://u:p@db:5432/pizzaqueue?sslmode=require"
    assert parse(url, conn_max_age=0) == dj_database_url.parse(url, conn_max_age=0)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("postgres://u@db1:5432,,db2/db", "'' is not host"),
        ("postgres://u@db1:5432,db2:99999/db", "port 99999"),
        ("postgres://u@db1:5432,db2:x/db", "'db2:x' is not host"),
        ("mysql://u@db1,db2/db", "PostgreSQL only"),
    ],
)
def test_a_malformed_node_list_is_refused(url: str, complaint: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=complaint):
        parse(url)


def test_the_listen_url_may_name_a_cluster_too(settings) -> None:
    settings.PIZZAQUEUE_LISTEN_DATABASE_URL = CLUSTER

    params = listen_params("pizzaqueue-relay")

    assert (params["host"], params["port"], params["target_session_attrs"]) == ("db1,db2", "5432,5433", "read-write")
    assert params["connect_timeout"] == CLUSTER_OPTIONS["connect_timeout"]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.django_db
def test_a_node_that_refuses_is_passed_over_for_the_next_one(settings) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("a cluster is PostgreSQL's")
    real = connection.settings_dict
    auth = real["USER"] + (f":{real['PASSWORD']}" if real["PASSWORD"] else "")
    url = (
        f"postgres://{auth}@127.0.0.1:{closed_port()},{real['HOST'] or '127.0.0.1'}:{real['PORT'] or 5432}"
        f"/{real['NAME']}?target_session_attrs=read-write"
    )
    settings.PIZZAQUEUE_LISTEN_DATABASE_URL = url

    with psycopg.connect(**listen_params("pizzaqueue-listen-test"), autocommit=True) as listener:
        assert listener.execute("SELECT NOT pg_is_in_recovery()").fetchone() == (True,)

    # Django's own connection, from the URL as the settings read it, in a process of its own.
    checked = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--check"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
