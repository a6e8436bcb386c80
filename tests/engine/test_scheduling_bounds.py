"""An order's `not_before` is bounded ahead on the engine's own way in: a request
placed directly is refused whole (the shop's ways in, and the migration that
cancels what was stored before the bound, are in tests/shop/test_scheduling_bounds.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from tests.base import order_request
from workers import queue
from workers.models import Order, OrderEvent

pytestmark = pytest.mark.django_db

AHEAD = "Must be at most 90 days from now."


@pytest.mark.parametrize("place", [queue.place, lambda request: queue.place_many([request])], ids=["one", "many"])
def test_placing_a_request_out_of_range_directly_writes_nothing(place: Any) -> None:
    request = order_request(not_before=datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-12))))

    with pytest.raises(ValidationError) as excinfo:
        place(request)

    assert excinfo.value.message_dict == {"not_before": [AHEAD]}
    assert (Order.objects.count(), OrderEvent.objects.count()) == (0, 0)
