"""The shop's hand-written statements hold to the models whose rows they load."""

from __future__ import annotations

import re
from pathlib import Path

from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from orders import sql
from workers.sql import column

ROOT = Path(__file__).resolve().parents[2]


def selected(name: str) -> list[str]:
    [columns] = re.findall(r"SELECT (.*?) FROM authtoken_token", re.sub(r"\s+", " ", sql.queries[name]))
    return [c.strip() for c in columns.split(",")]


def test_the_token_lookups_read_the_token_then_the_user_in_field_order() -> None:
    expected = [f"t.{column(f)}" for f in Token._meta.concrete_fields] + [
        f"u.{column(f)}" for f in get_user_model()._meta.concrete_fields
    ]
    for name in ("token_user_and_permission_ids_postgresql", "token_user_and_permission_ids_sqlite"):
        assert selected(name)[: len(expected)] == expected


def test_every_shop_statement_is_called_by_name() -> None:
    code = "".join(p.read_text() for p in ROOT.joinpath("orders").rglob("*.py"))
    called = set(re.findall(r"""sql\.queries\["([a-z_]+)"\]""", code))
    for name in re.findall(r"""for_this_database\("([a-z_]+)"\)""", code):
        called |= {f"{name}_postgresql", f"{name}_sqlite"}
    assert set(sql.queries) - called == set()


def test_each_engine_has_its_own_version_of_what_differs() -> None:
    for name in ("token_user_and_permission_ids", "menu"):
        assert {f"{name}_postgresql", f"{name}_sqlite"} <= set(sql.queries)
