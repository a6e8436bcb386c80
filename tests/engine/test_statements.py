"""The hand-written statements hold to the models and to the ORM's rules they repeat.

Each statement in `workers/queries.sql` is written out whole, so what it
shares with the ORM path (the columns of a cleared lease, the claim order,
the statuses and event kinds, the tables' columns) is checked here rather
than spliced in; `test_twins.py` checks the rows they leave.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workers import sql
from workers.models import CLAIM_ORDER, Order, OrderEvent
from workers.queue import leases

ROOT = Path(__file__).resolve().parents[2]


def sql_in(code: str) -> str:
    return re.sub(r"\s+", " ", code)


def test_every_statement_is_read_whole_with_its_comment() -> None:
    text = (ROOT / "workers" / "queries.sql").read_text()
    headers = re.findall(r"^-- name: (\S+)\n(-- \S.*)?", text, re.MULTILINE)
    assert [name for name, _ in headers] == list(sql.queries)
    assert [name for name, comment in headers if not comment] == []


def test_a_statement_written_twice_is_refused(tmp_path: Path) -> None:
    twice = tmp_path / "queries.sql"
    twice.write_text("-- name: ping\n-- one\nSELECT 1;\n\n-- name: ping\n-- two\nSELECT 2;\n")
    with pytest.raises(ValueError, match="'ping' is written twice"):
        sql.read_queries(twice)


def test_every_engine_statement_is_called_by_name() -> None:
    code = "".join(p.read_text() for app in ("workers", "orders", "pizzaqueue") for p in (ROOT / app).rglob("*.py"))
    called = set(re.findall(r"""sql\.queries\["([a-z_]+)"\]""", code))
    assert set(sql.queries) - called == set()


def test_placing_inserts_every_column_of_an_order() -> None:
    [columns] = re.findall(r"INSERT INTO orders_order \((.*?)\)", sql_in(sql.queries["place"]))
    assert [c.strip() for c in columns.split(",")] == [sql.column(f) for f in Order._meta.concrete_fields]


@pytest.mark.parametrize("name", ["complete"])
def test_a_statement_that_ends_a_lease_clears_what_the_orm_clears(name: str) -> None:
    cleared = {sql.column(Order._meta.get_field(f)) for f in leases.LEASE_CLEARED}
    sets = dict(re.findall(r"(\w+) = (NULL|'')", sql_in(sql.queries[name])))
    assert {column: sets.get(column) for column in cleared} == {
        "lease_token": "NULL",
        "lease_expires_at": "NULL",
        "stage": "''",
        "stage_started_at": "NULL",
    }


def test_the_claim_sets_what_the_orm_claim_sets_and_keeps_a_handed_over_stage() -> None:
    statement = sql_in(sql.queries["claim"])
    for column in ("avoid_worker_id = NULL", "attempts = attempts + 1"):
        assert column in statement
    assert "stage =" not in statement.split("RETURNING")[0].split("UPDATE")[1]


@pytest.mark.parametrize("name", ["claimable", "claim"])
def test_the_claim_takes_orders_in_the_claim_order(name: str) -> None:
    [order_by] = re.findall(r"ORDER BY ([\w, ]+?) (?:LIMIT|$)", sql_in(sql.queries[name]))
    assert order_by == ", ".join(CLAIM_ORDER)


@pytest.mark.parametrize("name", ["claimable", "claim"])
def test_both_claims_apply_the_same_rule(name: str) -> None:
    statement = sql_in(sql.queries[name])
    for part in (
        "status = 'queued'",
        "avoid_worker_id IS NULL OR avoid_worker_id <> %(worker)s",
        "pinned_shop = (SELECT name FROM workers_worker WHERE id = %(worker)s)",
        "bucket IN (SELECT number FROM workers_bucket WHERE owner_id = %(worker)s)",
        "OR avoid_worker_id IS NOT NULL",
    ):
        assert part in statement


def test_statements_name_only_real_statuses_event_kinds_and_channels() -> None:
    text = sql_in(" ".join(sql.queries.values()))
    assert set(re.findall(r"status = '([a-z-]+)'", text)) <= set(Order.Status.values)
    written = set(re.findall(r"SELECT id, '([a-z-]+)'", text)) | set(re.findall(r"SELECT \w+, '([a-z-]+)', ", text))
    assert written == {"claimed", "done", "placed"}
    assert written <= set(OrderEvent.Kind.values)
    assert set(re.findall(r"'(pizzaqueue_\w+)'", text)) == {sql.ORDERS_CHANNEL, sql.EVENTS_CHANNEL}
