"""Every statement the shop writes by hand, each once, called by name.

The engine's statements are in `workers.sql`; these read only the shop's own
tables (the menu, DRF's tokens, Django's permissions) or ask the planner
about the engine's. Names come from the models once; every value is a parameter.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from rest_framework.authtoken.models import Token

from orders.models import Pizza
from workers.models import Order
from workers.sql import column, columns

_quote = connection.ops.quote_name
_User = get_user_model()


def _permissions() -> str:
    """A scalar subquery: the names ("app.codename,…") of the permissions user `u` has,
    directly or through a group: ModelBackend's two queries, as one."""
    own: Any = _User._meta.get_field("user_permissions")  # many-to-many fields: their tables' names
    groups: Any = _User._meta.get_field("groups")
    granted: Any = Group._meta.get_field("permissions")
    user_id = _quote(column(_User._meta.pk))
    app, codename = _quote(column(ContentType._meta.get_field("app_label"))), _quote("codename")
    name = f"ct.{app} || '.' || p.{codename}"
    joined = f"string_agg({name}, ',')" if connection.vendor == "postgresql" else f"group_concat({name}, ',')"
    content_type = _quote(column(Permission._meta.get_field("content_type")))
    return (
        f"SELECT {joined} FROM {_quote(Permission._meta.db_table)} p "  # noqa: S608 - names from the models
        f"JOIN {_quote(ContentType._meta.db_table)} ct ON ct.{_quote(column(ContentType._meta.pk))} = p.{content_type} "
        f"WHERE p.{_quote(column(Permission._meta.pk))} IN ("
        f"SELECT {_quote(own.m2m_reverse_name())} FROM {_quote(own.m2m_db_table())} "
        f"WHERE {_quote(own.m2m_column_name())} = u.{user_id} "
        f"UNION SELECT g.{_quote(granted.m2m_reverse_name())} FROM {_quote(granted.m2m_db_table())} g "
        f"JOIN {_quote(groups.m2m_db_table())} ug ON ug.{_quote(groups.m2m_reverse_name())} = g.{_quote(granted.m2m_column_name())} "
        f"WHERE ug.{_quote(groups.m2m_column_name())} = u.{user_id})"
    )


_TOKEN_AND_USER = (
    f"FROM {_quote(Token._meta.db_table)} t JOIN {_quote(_User._meta.db_table)} u "
    f"ON u.{_quote(column(_User._meta.pk))} = t.{_quote(column(Token._meta.get_field('user')))} "
    f"WHERE t.{_quote(column(Token._meta.pk))} = %s"
)
# A token and its user, by key: the join DRF's `select_related("user").get(key=...)`
# compiles afresh on every API request, written once (the columns of both models, in
# field order, for `sql.load`).
TOKEN_USER = f"SELECT {columns(Token, 't')}, {columns(_User, 'u')} {_TOKEN_AND_USER}"  # noqa: S608 - names from the models
# The same, then the user's permission names: for a request that changes something,
# whose role check (placing, cancelling) would otherwise cost two more queries. The
# subquery costs PostgreSQL about half a millisecond of planning, so reads go without.
TOKEN_USER_AND_PERMISSIONS = (
    f"SELECT {columns(Token, 't')}, {columns(_User, 'u')}, ({_permissions()}) {_TOKEN_AND_USER}"  # noqa: S608
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
