"""The LISTEN connections can bypass a transaction-mode pooler."""

from __future__ import annotations

from workers.listening import listen_params


def test_listeners_use_the_direct_url_when_one_is_given(settings) -> None:
    settings.PIZZAQUEUE_LISTEN_DATABASE_URL = "postgres://queue:secret@db.internal:5432/pizzaqueue"

    params = listen_params("pizzaqueue-listen-oven-1")

    assert params == {
        "dbname": "pizzaqueue",
        "user": "queue",
        "password": "secret",
        "host": "db.internal",
        "port": 5432,
        "application_name": "pizzaqueue-listen-oven-1",
    }


def test_listeners_default_to_the_main_database_without_djangos_cursor_machinery(settings) -> None:
    settings.PIZZAQUEUE_LISTEN_DATABASE_URL = ""

    params = listen_params("x" * 80)

    assert params["application_name"] == "x" * 63
    assert not {"cursor_factory", "context", "prepare_threshold", "pool"} & set(params)
