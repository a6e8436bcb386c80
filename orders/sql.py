"""Every statement the shop writes by hand, each once, called by name.

The engine's statements are in `workers.sql`; these read only the shop's own
tables (the menu, DRF's tokens, Django's permissions) or ask the planner
about the engine's. Names come from the models once; every value is a parameter.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from rest_framework.authtoken.models import Token

from orders.models import Pizza
from workers.models import Order
from workers.sql import column, columns

_quote = connection.ops.quote_name
_User = get_user_model()


def _permission_ids() -> str:
    """Two scalar subqueries: the ids of the permissions user `u` has through their
    groups, then directly (ModelBackend's two queries, as columns of the token's).

    Ids, not names: each subquery reads one table by its index, where joining the
    permissions and their content types for the names cost PostgreSQL three times
    the rest of the token lookup. An id's name never changes, so each process maps
    ids to names itself (`orders.authentication`).
    """
    own: Any = _User._meta.get_field("user_permissions")  # many-to-many fields: their tables' names
    groups: Any = _User._meta.get_field("groups")
    granted: Any = Group._meta.get_field("permissions")
    user_id = f"u.{_quote(column(_User._meta.pk))}"

    def ids(column_name: str, table: str, where: str) -> str:
        if connection.vendor == "postgresql":
            return f"ARRAY(SELECT {column_name} FROM {table} WHERE {where})"  # noqa: S608 - names from the models
        return f"(SELECT group_concat({column_name}) FROM {table} WHERE {where})"  # noqa: S608

    users_groups = (
        f"SELECT {_quote(groups.m2m_reverse_name())} FROM {_quote(groups.m2m_db_table())} "  # noqa: S608 - names from the models
        f"WHERE {_quote(groups.m2m_column_name())} = {user_id}"
    )
    in_groups = (
        f"= ANY(ARRAY({users_groups}))" if connection.vendor == "postgresql" else f"IN ({users_groups})"
    )  # PostgreSQL: an array of the groups, not a join (half the cost again)
    through_groups = ids(
        _quote(granted.m2m_reverse_name()),
        _quote(granted.m2m_db_table()),
        f"{_quote(granted.m2m_column_name())} {in_groups}",
    )
    directly = ids(
        _quote(own.m2m_reverse_name()), _quote(own.m2m_db_table()), f"{_quote(own.m2m_column_name())} = {user_id}"
    )
    return f"{through_groups}, {directly}"


_TOKEN_AND_USER = (
    f"FROM {_quote(Token._meta.db_table)} t JOIN {_quote(_User._meta.db_table)} u "
    f"ON u.{_quote(column(_User._meta.pk))} = t.{_quote(column(Token._meta.get_field('user')))} "
    f"WHERE t.{_quote(column(Token._meta.pk))} = %s"
)
# A token and its user, by key: the join DRF's `select_related("user").get(key=...)`
# compiles afresh on every API request, written once (the columns of both models, in
# field order, for `sql.load`); then the ids of the user's permissions through groups
# and directly, whose role checks (placing, cancelling, reading every order) would
# otherwise cost two more queries.
TOKEN_USER_AND_PERMISSION_IDS = (
    f"SELECT {columns(Token, 't')}, {columns(_User, 'u')}, {_permission_ids()} {_TOKEN_AND_USER}"  # noqa: S608
)


@cache
def menu(count: int) -> str:
    """Slug and bake seconds of the available pizzas among `count` slugs.

    Every order asks this, and the ORM compiled the same query each time for
    longer than it ran; one text per number of slugs (at most
    PIZZAQUEUE_MAX_ITEMS), parameters: `True, *slugs`.
    """
    slug, seconds, available = (
        _quote(column(Pizza._meta.get_field(name))) for name in ("slug", "bake_seconds", "available")
    )
    return (
        f"SELECT {slug}, {seconds} FROM {_quote(Pizza._meta.db_table)} "  # noqa: S608 - names from the model
        f"WHERE {available} = %s AND {slug} IN ({', '.join(['%s'] * count)})"
    )


_ORDERS = _quote(Order._meta.db_table)
# PostgreSQL's estimate of the orders table's rows, and of those with one status
# (parameter: the status): statistics only, nothing is scanned. No ORM word for EXPLAIN's plan as data.
ESTIMATE_ORDERS = f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {_ORDERS}"  # noqa: S608 - name from the model
ESTIMATE_ORDERS_WITH_STATUS = f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {_ORDERS} WHERE status = %s"  # noqa: S608
