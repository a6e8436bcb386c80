"""The engine's tests run the monitor with no application duty: what the shop does
there (its promises, `orders.promises.keep`) is the shop's tests' business."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _no_application_duty(settings: Any) -> None:
    settings.PIZZAQUEUE_MONITOR_DUTY = ""
