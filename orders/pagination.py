"""API paging that stays fast with millions of orders: no OFFSET walks, no full-table COUNT.

`KeysetPagination` pages the API's lists by position: the cursor carries the
last row's sort key, and the next page is `WHERE key < cursor ORDER BY key
DESC LIMIT n`, an index range scan however deep the page. Unlike DRF's
CursorPagination it compares the whole key (e.g. `(created_at, id)`), so
thousands of orders placed in one bulk with the same timestamp page correctly.

"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

BIGINT_MAX = 2**63 - 1


class KeysetPagination(BasePagination):
    """Newest first by `ordering` (descending fields, the last one unique); `next` links only."""

    ordering: Sequence[str] = ("-id",)
    page_size = 50
    max_page_size = 200
    cursor_query_param = "cursor"
    page_size_query_param = "page_size"
    invalid_cursor_message = "Invalid cursor; use the `next` link of a previous page."

    def __init__(self) -> None:
        self.next_position: list[Any] | None = None
        self.base_url = ""

    @property
    def fields(self) -> list[str]:
        return [f.removeprefix("-") for f in self.ordering]

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any]:
        self.base_url = request.build_absolute_uri()
        page_size = self.get_page_size(request)
        queryset = queryset.order_by(*self.ordering)
        position = self.decode_cursor(request, queryset.model)
        if position is not None:
            queryset = queryset.filter(self.after(position))
        partition = getattr(view, "keyset_partition", None)
        rows = self.merged(queryset, partition, page_size + 1) if partition else list(queryset[: page_size + 1])
        page = rows[:page_size]
        self.next_position = [getattr(page[-1], f) for f in self.fields] if len(rows) > page_size else None
        return page

    # Optimization: the unfiltered first page of 300,000 orders in 15 ms instead of 250-300 (bench/fastpaths.py).
    def merged(self, queryset: models.QuerySet, partition: tuple[str, Sequence[Any]], limit: int) -> list[Any]:
        """The first `limit` rows, found as the first `limit` of each partition, merged.

        When the only index leading with the sort key is per partition (orders:
        `(status, created_at)`), `ORDER BY created_at DESC LIMIT n` over all
        statuses sorts the whole table; n rows from each status's index range,
        merged here, cost a few index probes instead. The page's rows are then
        read in one query.
        """
        field, values = partition
        keys: list[tuple[Any, ...]] = []
        for value in values:
            keys += queryset.filter(**{field: value}).values_list(*self.fields)[:limit]
        keys = sorted(keys, reverse=True)[:limit]
        unique = self.fields[-1]
        return list(queryset.filter(**{f"{unique}__in": [k[-1] for k in keys]}))

    def after(self, position: list[Any]) -> Q:
        """Rows strictly after `position` in descending key order: (a, b) < (x, y)."""
        condition = Q()
        for index in reversed(range(len(self.fields))):
            field = self.fields[index]
            equal_before = dict(zip(self.fields[:index], position[:index], strict=True))
            clause = Q(**equal_before, **{f"{field}__lt": position[index]})
            condition = clause if index == len(self.fields) - 1 else clause | condition
        return condition

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= self.max_page_size:
            raise ValidationError({self.page_size_query_param: [f"Must be between 1 and {self.max_page_size}."]})
        return int(raw)

    def decode_cursor(self, request: Request, model: type[models.Model]) -> list[Any] | None:
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        try:
            raw = json.loads(base64.urlsafe_b64decode(encoded.encode("ascii")))
            if not isinstance(raw, list) or len(raw) != len(self.fields):
                raise ValueError("wrong shape")
            return [self._to_python(model._meta.get_field(f), value) for f, value in zip(self.fields, raw, strict=True)]
        except (ValueError, TypeError, OverflowError, UnicodeError, binascii.Error, DjangoValidationError):
            raise ValidationError({self.cursor_query_param: [self.invalid_cursor_message]}) from None

    @staticmethod
    def _to_python(field: Any, value: Any) -> Any:
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ValueError("cursor values are strings or integers")
        value = field.to_python(value)
        if isinstance(value, int) and not 0 <= value <= BIGINT_MAX:
            raise ValueError("out of range")
        if isinstance(value, datetime):
            # Normalised here, so a naive or out-of-range moment fails as a bad cursor, not in the query.
            value = value.astimezone(UTC) if timezone.is_aware(value) else timezone.make_aware(value, UTC)
        return value

    def encode_cursor(self, position: list[Any]) -> str:
        values = [v.isoformat() if hasattr(v, "isoformat") else v if isinstance(v, int) else str(v) for v in position]
        return base64.urlsafe_b64encode(json.dumps(values).encode()).decode("ascii")

    def get_next_link(self) -> str | None:
        if self.next_position is None:
            return None
        return replace_query_param(self.base_url, self.cursor_query_param, self.encode_cursor(self.next_position))

    def get_first_link(self) -> str:
        return remove_query_param(self.base_url, self.cursor_query_param)

    def get_paginated_response(self, data: list[Any]) -> Response:
        return Response({"next": self.get_next_link(), "results": data})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["next", "results"],
            "properties": {
                "next": {
                    "type": "string",
                    "nullable": True,
                    "format": "uri",
                    "description": "The next page, or null on the last one.",
                },
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "Opaque position from a previous page's `next` link.",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Results per page (default {self.page_size}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size},
            },
        ]


class OrderPagination(KeysetPagination):
    # (status, created_at) serves status-filtered pages; created_at alone the unfiltered list.
    ordering = ("-created_at", "-id")


class WorkerPagination(KeysetPagination):
    ordering = ("-id",)
