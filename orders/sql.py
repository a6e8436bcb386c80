"""Every statement the shop writes by hand, each once, called by name.

The engine's statements are in `workers.sql`; these three read only the
shop's own tables (the menu, DRF's tokens) or ask the planner about the
engine's. Names come from the models once; every value is a parameter.
"""

from __future__ import annotations

from functools import cache

from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.authtoken.models import Token

from orders.models import Pizza
from workers.models import Order
from workers.sql import column, columns

_quote = connection.ops.quote_name
_User = get_user_model()

# A token and its user, by key: the join DRF's `select_related("user").get(key=...)`
# compiles afresh on every API request, written once (the columns of both models,
# in field order, for `sql.load`).
TOKEN_AND_USER = (
    f"SELECT {columns(Token, 't')}, {columns(_User, 'u')} "  # noqa: S608 - names from the models
    f"FROM {_quote(Token._meta.db_table)} t JOIN {_quote(_User._meta.db_table)} u "
    f"ON u.{_quote(column(_User._meta.pk))} = t.{_quote(column(Token._meta.get_field('user')))} "
    f"WHERE t.{_quote(column(Token._meta.pk))} = %s"
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
