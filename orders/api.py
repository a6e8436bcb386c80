"""The REST API for integrators: place, list, track and cancel orders; watch the kitchens.

Thin views over `orders.intake` (the one validation source) and `orders.queue`
(the one module that changes an order's state). Every call needs a token.
Every 4xx is JSON naming the field or the reason, in one shape:

    {"detail": "Invalid input.", "code": "invalid", "errors": {"items[0].pizza": ["Not on the menu: 'x'."]}}

The exception handler below maps the queue's and Django's exceptions onto it,
so no bad input reaches the default 500.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any, cast

from django import forms
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, RequestDataTooBig
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import (
    APIException,
    NotFound,
    PermissionDenied,
    Throttled,
    UnsupportedMediaType,
    ValidationError,
)
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import exception_handler as drf_exception_handler

from orders import roles
from orders.handlers import customer_may_cancel, operator_may_cancel
from orders.intake import clean_order_request
from orders.pagination import BIGINT_MAX, OrderPagination, WorkerPagination
from orders.serializers import (
    BucketSerializer,
    ErrorSerializer,
    OrderCreateSerializer,
    OrderDetailSerializer,
    OrderSerializer,
    WorkerSerializer,
)
from orders.timeline import PRIVATE_KINDS
from workers import clock, queue
from workers.models import Bucket, Order, OrderEvent, Worker, WorkerQuerySet, reads_every_order

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
# Visible ASCII, as in the IETF Idempotency-Key draft; 200 leaves room for the per-user prefix.
IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,200}")
THROTTLE_RATE_RE = re.compile(r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)")


# --- Errors -----------------------------------------------------------------------


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "too_large"


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Conflict with the order's current state."
    default_code = "conflict"


def _flatten(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error structures as {"field.sub": ["message", ...]}."""
    if isinstance(errors, Mapping):
        flat: dict[str, list[str]] = {}
        for key, value in errors.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(errors, list) and errors and all(isinstance(e, Mapping | list) for e in errors):
        flat = {}
        for index, value in enumerate(errors):
            flat.update(_flatten(value, f"{prefix}[{index}]"))
        return flat
    messages = errors if isinstance(errors, list) else [errors]
    return {prefix or api_settings.NON_FIELD_ERRORS_KEY: [str(m) for m in messages]}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus the domain's exceptions, in one JSON shape for every 4xx."""
    if isinstance(exc, DjangoValidationError):
        exc = ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages})
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(f"Request body larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")
    elif isinstance(exc, queue.OrderNotFoundError):
        exc = NotFound("No order with this id.")
    elif isinstance(exc, queue.InvalidTransitionError):
        exc = Conflict(str(exc), code="invalid_transition")
    elif isinstance(exc, queue.IdempotencyConflictError):
        exc = Conflict(str(exc), code="idempotency_conflict")
    elif isinstance(exc, Http404):
        exc = NotFound(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = PermissionDenied(*exc.args)
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, APIException):
        return response  # None: a bug; let Django log it and answer 500
    if isinstance(exc, ValidationError):
        response.data = {"detail": "Invalid input.", "code": "invalid", "errors": _flatten(exc.detail)}
    else:
        detail = exc.detail
        body: dict[str, Any] = {"detail": str(detail), "code": getattr(detail, "code", None) or exc.default_code}
        wait = getattr(exc, "wait", None) if isinstance(exc, Throttled) else None
        if wait is not None:
            body["wait"] = wait
        response.data = body
    return response


def not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    """Unknown routes under api/ answer in the API's shape, not with an HTML page."""
    return JsonResponse({"detail": "No such API endpoint.", "code": "not_found"}, status=404)


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    reasons = {
        400: "Bad input; `errors` names each field at fault.",
        401: "No or invalid token.",
        403: "Authenticated by session without a CSRF token, or placing without the integrators role.",
        404: "No such order.",
        409: "The order's state (or an Idempotency-Key) does not allow this.",
        413: "Body larger than the limit.",
        415: "Body is not application/json.",
        429: "Too many orders; retry after `wait` seconds.",
    }
    return {code: OpenApiResponse(ErrorSerializer, description=reasons[code]) for code in codes}


# --- Parsing and throttling -------------------------------------------------------


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


class BoundedJSONParser(JSONParser):
    """JSON, read up to the body size limit and no further.

    DRF reads the request as a stream, which skips Django's
    DATA_UPLOAD_MAX_MEMORY_SIZE check on `request.body`; this parser applies
    it. It also turns what `json` raises on hostile input (deep nesting,
    NaN, lone surrogates no database can store) into a 400.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise PayloadTooLarge(f"Request body larger than {limit} bytes.")
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            data = json.loads(body.decode(encoding), parse_constant=_reject_constant)
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except (UnicodeDecodeError, UnicodeEncodeError) as exc:
            raise ValidationError({"body": [f"JSON parse error - not valid Unicode: {exc.reason}."]}) from None
        except RecursionError:
            raise ValidationError({"body": ["JSON parse error - nested too deeply."]}) from None
        except ValueError as exc:
            raise ValidationError({"body": [f"JSON parse error - {exc}"]}) from None
        return data


class OrderCreateThrottle(ScopedRateThrottle):
    """Per-user limit on order intake (scope `order-create` in DEFAULT_THROTTLE_RATES).

    The rate is looked up per request rather than once at import, so a
    settings override (tests, benchmarks) takes effect at once; None means
    unlimited.
    """

    def get_rate(self) -> str | None:
        rates: dict[str, Any] = api_settings.DEFAULT_THROTTLE_RATES
        rate = rates.get(self.scope or "")
        if rate is not None and not (isinstance(rate, str) and THROTTLE_RATE_RE.fullmatch(rate)):
            raise ImproperlyConfigured(f"Throttle rate for {self.scope!r} must look like 600/minute, got {rate!r}")
        return rate


# --- Orders -----------------------------------------------------------------------


class OrderFilterForm(forms.Form):
    status = forms.ChoiceField(choices=Order.Status.choices, required=False)
    worker = forms.CharField(max_length=100, required=False, help_text="A worker's name or numeric id.")
    priority = forms.IntegerField(min_value=Order.MIN_PRIORITY, max_value=Order.MAX_PRIORITY, required=False)
    handover = forms.ChoiceField(choices=[c for c in Order.Handover.choices if c[0]], required=False)

    def filter(self, orders: Any) -> Any:
        data = self.cleaned_data
        if data["status"]:
            orders = orders.filter(status=data["status"])
        if data["handover"]:
            orders = orders.filter(handover=data["handover"])
        if data["priority"] is not None:
            orders = orders.filter(priority=data["priority"])
        worker = data["worker"]
        if worker:
            if worker.isascii() and worker.isdigit():
                orders = orders.filter(worker_id=int(worker)) if int(worker) <= BIGINT_MAX else orders.none()
            else:
                orders = orders.filter(worker__name=worker)
        return orders


def _declared_length(request: Request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _form_errors(form: forms.Form) -> ValidationError:
    return ValidationError({field: [str(m) for m in messages] for field, messages in form.errors.items()})


ORDER_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The order's id.")
ORDER_FILTERS = [
    OpenApiParameter("status", str, enum=Order.Status.values, description="Only orders in this status."),
    OpenApiParameter("worker", str, description="Only orders handled by this worker (name or numeric id)."),
    OpenApiParameter(
        "handover",
        str,
        enum=[v for v in Order.Handover.values if v],
        description="Only made orders at this hand-over step: `shelf` lists what waits for a driver.",
    ),
    OpenApiParameter(
        "priority",
        {"type": "integer", "minimum": Order.MIN_PRIORITY, "maximum": Order.MAX_PRIORITY},
        description="Only orders of this priority.",
    ),
]
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    str,
    OpenApiParameter.HEADER,
    required=False,
    pattern=r"^[!-~]{1,200}$",
    description="Retry-safe intake: the same key and body return the first order (200); "
    "the same key with a different body is refused (409). Scoped to your token's user.",
)


class MayPlaceOrders(BasePermission):
    """Placing orders is the integrators' role; reading and cancelling one's own needs only a token."""

    message = "Placing orders needs the integrators role."

    def has_permission(self, request: Request, view: Any) -> bool:
        return getattr(view, "action", None) != "create" or request.user.has_perm(roles.PLACE_ORDERS)


class OrderViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Orders: place (idempotently), list, read with the timeline, cancel."""

    queryset = Order.objects.all()  # the model, for the schema; requests read `get_queryset`
    serializer_class = OrderSerializer
    pagination_class = OrderPagination
    parser_classes = [BoundedJSONParser]
    permission_classes = [IsAuthenticated, MayPlaceOrders]
    throttle_scope = "order-create"
    # Any segment reaches the view, so a malformed id is a JSON 404 like an unknown one.
    lookup_value_regex = "[^/]+"
    keyset_partition: tuple[str, list[str]] | None = None

    def get_throttles(self) -> list[Any]:
        return [OrderCreateThrottle()] if self.action == "create" else super().get_throttles()

    def get_serializer_class(self) -> type[OrderSerializer]:
        return OrderDetailSerializer if self.action in ("retrieve", "cancel") else OrderSerializer

    def get_queryset(self) -> Any:
        # An integrator's own orders only; anyone else's is a 404, exactly like an unknown id.
        orders = Order.objects.visible_to(self.request.user).select_related("worker")
        if self.action in ("retrieve", "cancel"):
            timeline = OrderEvent.objects.select_related("worker", "actor").order_by("id")
            if not reads_every_order(self.request.user):
                timeline = timeline.exclude(kind__in=PRIVATE_KINDS)  # a kitchen's lost lease is the kitchens' business
            orders = orders.prefetch_related(Prefetch("events", queryset=timeline))
        return orders

    def get_object(self) -> Order:
        try:
            order_id = uuid.UUID(self.kwargs["pk"])
        except ValueError:
            raise NotFound("No order with this id.") from None
        order = self.get_queryset().filter(pk=order_id).first()
        if order is None:
            raise NotFound("No order with this id.")
        return order

    @extend_schema(parameters=ORDER_FILTERS, responses={200: OrderSerializer(many=True), **_errors(400, 401, 403)})
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Orders newest first, optionally filtered; page with the `next` link."""
        filters = OrderFilterForm(request.query_params)
        if not filters.is_valid():
            raise _form_errors(filters)
        if not filters.cleaned_data["status"]:
            # Newest first across statuses, merged from the per-status index (see KeysetPagination.merged).
            self.keyset_partition = ("status", Order.Status.values)
        page = self.paginate_queryset(filters.filter(self.get_queryset()))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(parameters=[ORDER_ID], responses={200: OrderDetailSerializer, **_errors(401, 403, 404)})
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """One order with its timeline."""
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(
        request=OrderCreateSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={
            201: OpenApiResponse(
                OrderSerializer, description="Placed: the order and its `placed` event are committed."
            ),
            200: OpenApiResponse(OrderSerializer, description="A retry with the same Idempotency-Key and body."),
            **_errors(400, 401, 403, 409, 413, 415, 429),
        },
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Place an order. 201 means it is durable: committed with its `placed` event."""
        key = self._idempotency_key(request)
        if not request.content_type and _declared_length(request) > 0:
            raise UnsupportedMediaType("", detail="A body needs Content-Type: application/json.")
        try:
            order_request = clean_order_request(request.data)
        except (TypeError, ValueError, OverflowError):
            # Defensive: intake reports bad input as ValidationError, but a value
            # it fails to convert (e.g. the digit "²" as a number) must still be a 400.
            logger.warning("intake raised on malformed input", exc_info=True)
            raise ValidationError({"non_field_errors": ["Malformed value in the request."]}) from None
        order, created = queue.place(order_request, idempotency_key=key, owner=queue.Owner(user_id=request.user.pk))
        headers = {"Location": request.build_absolute_uri(f"{order.pk}/")}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(OrderSerializer(order).data, status=code, headers=headers)

    def _idempotency_key(self, request: Request) -> str | None:
        raw = request.headers.get(IDEMPOTENCY_HEADER)
        if raw is None:
            return None
        if not IDEMPOTENCY_KEY_RE.fullmatch(raw):
            raise ValidationError({IDEMPOTENCY_HEADER: ["Must be 1 to 200 visible ASCII characters."]})
        # Scoped per user: one integrator's key never returns another's order.
        return f"api:{request.user.pk}:{raw}"

    @extend_schema(
        operation_id="orders_cancel",
        request=None,
        parameters=[ORDER_ID],
        responses={200: OrderDetailSerializer, **_errors(401, 403, 404, 409)},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        """Cancel an order that is not finished: a queued one, or one in the kitchen (operators:
        at any stage; others: until PIZZAQUEUE_CUSTOMER_CANCEL_UNTIL). Otherwise 409."""
        user = request.user
        operator = user.has_perm(roles.CHANGE_ORDERS)
        queue.cancel(
            pk,
            reason="cancelled by an operator" if operator else "cancelled through the API",
            if_held=operator_may_cancel if operator else customer_may_cancel,
            among=Order.objects.changeable_by(user),
            actor_id=user.pk,
        )
        return Response(self.get_serializer(self.get_object()).data)


# --- Kitchens and buckets ---------------------------------------------------------


class WorkerFilterForm(forms.Form):
    status = forms.ChoiceField(choices=Worker.Status.choices, required=False)


class WorkerViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Kitchens, newest registration first, with their load."""

    queryset = Worker.objects.all()
    serializer_class = WorkerSerializer
    pagination_class = WorkerPagination

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=Worker.Status.values, description="Only workers in this status.")
        ],
        responses={200: WorkerSerializer(many=True), **_errors(400, 401, 403)},
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        filters = WorkerFilterForm(request.query_params)
        if not filters.is_valid():
            raise _form_errors(filters)
        workers = clock.with_db_now(cast(WorkerQuerySet, self.get_queryset()).with_load())
        if filters.cleaned_data["status"]:
            workers = workers.filter(status=filters.cleaned_data["status"])
        page = self.paginate_queryset(workers)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class BucketViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Every bucket (bounded by PIZZAQUEUE_BUCKETS, so not paged) with owner, epoch and queue depth."""

    queryset = Bucket.objects.select_related("owner").with_depth().order_by("number")
    serializer_class = BucketSerializer
    pagination_class = None

    @extend_schema(responses={200: BucketSerializer(many=True), **_errors(401, 403)})
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(BucketSerializer(self.get_queryset(), many=True, context=self.get_serializer_context()).data)


# --- Schema and docs ----------------------------------------------------------------


class JSONErrorsMixin:
    """Errors as JSON even from views whose renderers are YAML or HTML."""

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)  # type: ignore[misc]
        self.request.accepted_renderer = JSONRenderer()  # type: ignore[attr-defined]
        self.request.accepted_media_type = JSONRenderer.media_type  # type: ignore[attr-defined]
        return response


class SchemaView(JSONErrorsMixin, SpectacularAPIView):
    pass


class DocsView(JSONErrorsMixin, SpectacularSwaggerSplitView):
    """Swagger UI from the project's own static files, its start-up script served
    from this view (`?script`) rather than inline, as the Content-Security-Policy wants."""

    template_name = "api/docs.html"
