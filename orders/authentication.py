"""DRF's token authentication, with its lookup as one query written once.

Every API call checks its token, and DRF's own lookup
(`Token.objects.select_related("user").get(key=...)`) compiles the same ORM
query afresh on every request: a fifth of an order's CPU in the API server.
This subclass runs the same join as fixed SQL and builds the same objects,
with the same answers (401 "Invalid token." / "User inactive or deleted.").

Placing or cancelling an order needs a permission (a role), and so does
reading every order rather than one's own (`workers.models.reads_every_order`:
one rule for reading and changing). Django's check of a permission costs two
more queries per request (the user's permissions, then their groups'), so
the same statement reads the ids of the user's permissions too (`orders.sql`), and this module
fills the cache Django's `ModelBackend` keeps on the user for the request, so
`user.has_perm(...)` asks the database nothing more. The ids are read on
every request, so a role taken away counts at once; only what each id is
called ("app.codename") is kept by the process, because a permission's row
never changes its name (a new one is looked up when it first appears).

A read is scoped by a permission too, so every request reads the ids: a
read pays the half millisecond of planning the ids' subqueries cost
(docs/performance.md) rather than two more queries.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from orders import sql
from workers.sql import load

_User = get_user_model()
_TOKEN_COLUMNS = len(Token._meta.concrete_fields)
_KEY_LENGTH = Token._meta.get_field("key").max_length or 40

# Permission id -> "app_label.codename", as ModelBackend names them; grows as new ids appear.
_permission_names: dict[int, str] = {}


def _ids(value: Any) -> list[int]:
    """A subquery's ids: a list on PostgreSQL, "1,2,3" (or NULL) on SQLite."""
    if isinstance(value, str):
        return [int(i) for i in value.split(",")]
    return list(value or ())


def permission_names(ids: list[int]) -> set[str]:
    """The names of these permissions; one query when the process meets an id it has not named yet."""
    if any(i not in _permission_names for i in ids):
        _permission_names.update(
            (pk, f"{app}.{codename}")
            for pk, app, codename in Permission.objects.values_list("pk", "content_type__app_label", "codename")
        )
    # An id still unknown was deleted since it was read: it grants nothing.
    return {_permission_names[i] for i in ids if i in _permission_names}


# Optimization: fixed SQL for the token and its user, 2.4x faster than DRF's lookup on PostgreSQL (0.5 vs 1.3 ms, bench/fastpaths.py).
class TokenAuthentication(authentication.TokenAuthentication):
    """`Authorization: Token <key>`, as DRF's TokenAuthentication (which it is)."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        if len(key) > _KEY_LENGTH or "\x00" in key:
            # No token looks like this, and PostgreSQL refuses a NUL in text: not a 500.
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        with connection.cursor() as cursor:
            cursor.execute(sql.for_this_database("token_user_and_permission_ids"), [key])
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        token = load(Token, row)
        token.user = user = load(_User, row[_TOKEN_COLUMNS:])  # the permission ids, if any, come after
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        if not user.is_superuser:  # a superuser's has_perm asks nothing
            # What ModelBackend caches for has_perm: the groups' (get_group_permissions), then all of them.
            through_groups, directly = permission_names(_ids(row[-2])), permission_names(_ids(row[-1]))
            user._group_perm_cache = through_groups  # type: ignore[attr-defined]
            user._user_perm_cache = directly  # type: ignore[attr-defined]
            user._perm_cache = through_groups | directly  # type: ignore[attr-defined]
        return user, token
