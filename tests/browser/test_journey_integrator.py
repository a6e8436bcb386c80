"""An integrator's journey in Chromium: read /api/docs/ without a password, authorize with the
token in Swagger UI, and place a real order from the page."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, expect
from rest_framework.authtoken.models import Token

from orders import roles
from tests.base import ROOT, in_role
from tests.conftest import Daphne, sized_page
from workers.models import Order

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

ARTIFACTS = ROOT / "test-artifacts"
LAPTOP = {"width": 1280, "height": 900}


@pytest.fixture
def laptop(browser: Browser) -> Iterator[Page]:
    yield from sized_page(browser, LAPTOP)


def test_an_integrator_reads_the_docs_without_a_password_and_places_an_order_with_the_token(
    daphne: Daphne, laptop: Page
) -> None:
    daphne.start()
    integrator = in_role(User.objects.create_user("integrator"), roles.INTEGRATORS)  # a token, no password
    token = Token.objects.create(user=integrator).key

    laptop.goto(daphne.url("/api/docs/"))
    expect(laptop.locator(".swagger-ui .info .title")).to_contain_text("pizzaqueue API")
    laptop.click(".swagger-ui .btn.authorize")
    scheme = laptop.locator(".modal-ux .auth-container", has_text="tokenAuth")
    scheme.locator("input").fill(f"Token {token}")
    scheme.locator(".btn.modal-btn.auth.authorize").click()
    expect(scheme.get_by_role("button", name="Remove authorization")).to_be_visible()  # it holds the token now
    scheme.locator(".btn-done").click()

    create = laptop.locator(".opblock-post", has_text="/api/orders/").first
    create.locator(".opblock-summary").click()
    create.locator(".try-out__btn").click()
    body = {
        "items": [{"pizza": "margherita", "size": "large", "quantity": 1}],
        "area": "Old Town",
        "address": "1 Harbour Street",
        "phone": "+442079460958",
    }
    create.locator("textarea.body-param__text").fill(json.dumps(body))
    create.locator(".execute").click()
    expect(create.locator(".live-responses-table tbody .response-col_status").first).to_contain_text("201")
    create.locator(".live-responses-table").scroll_into_view_if_needed()
    laptop.screenshot(path=ARTIFACTS / "journey-integrator.png", full_page=False)

    placed = Order.objects.get()
    assert (placed.placed_by_id, placed.area, placed.items[0]["size"]) == (integrator.pk, "Old Town", "large")
