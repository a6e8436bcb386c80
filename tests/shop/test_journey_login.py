"""Logging in: each role lands on its own page, sees its own links, and is never looped back to the form."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from orders import roles
from orders.models import KitchenStaff
from tests.base import ROOT, in_role, make_worker

pytestmark = pytest.mark.django_db

PASSWORD = "pizza-oven-42"  # noqa: S105 - a test account's


def person(username: str, role: str | None = None, **kw: Any) -> User:
    user = User.objects.create_user(username, password=PASSWORD, **kw)
    return in_role(user, role) if role else user


def log_in(client: Client, username: str, next_page: str = "") -> Any:
    data = {"username": username, "password": PASSWORD}
    if next_page:
        data["next"] = next_page
    return client.post("/accounts/login/", data, follow=True)


@pytest.fixture
def cast(menu: None) -> None:
    person("operator", roles.OPERATORS, is_staff=True)
    KitchenStaff.objects.create(user=person("cook", roles.KITCHEN_STAFF), shop="staffed-1")
    person("integrator", roles.INTEGRATORS)
    make_worker("staffed-1")


@pytest.mark.parametrize(
    ("username", "home"),
    [("operator", "/board/"), ("cook", "/kitchen/staffed-1/"), ("integrator", "/api/docs/")],
)
def test_each_role_lands_on_its_own_page_after_logging_in(cast: None, username: str, home: str) -> None:
    response = log_in(Client(), username)
    assert response.redirect_chain[-1] == (home, 302)
    assert response.status_code == 200


def test_kitchen_staff_sent_to_the_board_land_on_their_display_with_a_reason(cast: None) -> None:
    response = log_in(Client(), "cook", next_page="/board/")
    assert response.redirect_chain == [("/kitchen/staffed-1/", 302)]
    assert [str(m) for m in response.context["messages"]] == [
        "The operations board is for operators; here is your page."
    ]
    page = response.content.decode()
    assert 'id="id_password"' not in page  # the display, not the login form again


def test_a_next_page_that_is_theirs_is_kept(cast: None) -> None:
    response = log_in(Client(), "operator", next_page="/kitchen/staffed-1/")
    assert response.redirect_chain == [("/kitchen/staffed-1/", 302)]


def test_a_next_page_on_another_host_is_ignored(cast: None) -> None:
    response = log_in(Client(), "operator", next_page="https://evil.example/")
    assert response.redirect_chain == [("/board/", 302)]


def test_a_wrong_password_shows_the_form_again_with_its_error(cast: None) -> None:
    response = Client().post("/accounts/login/", {"username": "cook", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


@pytest.mark.parametrize(
    ("username", "links"),
    [
        (None, ["Menu", "API docs"]),
        ("operator", ["Menu", "Board", "Admin", "API docs"]),
        ("cook", ["Menu", "Kitchen Staffed 1"]),
    ],
)
def test_the_navigation_shows_each_role_its_pages(cast: None, username: str | None, links: list[str]) -> None:
    client = Client()
    if username:
        client.force_login(User.objects.get(username=username))
    response = client.get("/")
    assert [label for label, _url in response.context["nav_links"]] == links


def test_the_api_docs_and_schema_are_readable_without_a_session_or_token(cast: None) -> None:
    docs = Client().get("/api/docs/")
    schema = Client().get("/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})
    assert (docs.status_code, schema.status_code) == (200, 200)
    assert "swagger-ui-bundle.js" in docs.content.decode()
    assert "tokenAuth" in schema.content.decode()  # Swagger UI's Authorize takes the token
    assert Client().get("/api/orders/").status_code == 401  # what they describe still needs it


def test_the_favicon_is_the_sites_own_and_never_a_404(cast: None) -> None:
    response = Client().get("/favicon.ico")
    assert (response.status_code, response["Location"]) == (301, "/static/favicon.svg")
    assert (ROOT / "static" / "favicon.svg").read_text().startswith("<svg")


def test_the_kitchen_display_shows_cooks_their_shop_not_its_host_pid_or_incarnation(cast: None) -> None:
    client = Client()
    client.force_login(User.objects.get(username="cook"))
    page = client.get("/kitchen/staffed-1/").content.decode()
    assert "<h1>Kitchen Staffed 1" in page
    for internal in ("Incarnation", "pid", "test-host"):
        assert internal not in page, internal
