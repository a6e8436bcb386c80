"""The staff login (and the admin's) is throttled per client address and per
username (`orders.logins`), counted in the cache every web process shares."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from orders.logins import LoginThrottle

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def three_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LoginThrottle, "THROTTLE_RATES", {"login": "3/minute"})


@pytest.fixture
def olga() -> User:
    return User.objects.create_user("olga", password="right horse battery", is_staff=True)  # noqa: S106


def attempt(password: str, username: str = "olga", address: str = "203.0.113.7", path: str = "/accounts/login/"):  # type: ignore[no-untyped-def]
    client = Client(REMOTE_ADDR=address)
    response = client.post(path, {"username": username, "password": password})
    return client, response


def test_a_fourth_login_attempt_in_a_minute_is_refused_even_with_the_right_password(olga: User) -> None:
    for _ in range(3):
        _client, response = attempt("wrong")
        assert response.status_code == 200

    client, response = attempt("right horse battery")

    assert response.status_code == 429
    wait = response["Retry-After"]
    assert 0 < int(wait) <= 60
    assert f"Too many login attempts; try again in {wait} seconds." in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_guesses_at_one_account_from_many_addresses_are_throttled(olga: User) -> None:
    for n in range(3):
        attempt("wrong", address=f"198.51.100.{n}")

    _client, response = attempt("right horse battery", address="198.51.100.99")

    assert response.status_code == 429


def test_the_admin_login_is_throttled_too(olga: User) -> None:
    for _ in range(3):
        attempt("wrong", path="/admin/login/")

    client, response = attempt("right horse battery", path="/admin/login/")

    assert response.status_code == 429
    assert response.content.decode() == f"Too many login attempts; try again in {response['Retry-After']} seconds."
    assert "_auth_user_id" not in client.session


def test_a_login_within_the_limit_logs_in(olga: User) -> None:
    attempt("wrong")
    client, response = attempt("right horse battery")

    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(olga.pk)
