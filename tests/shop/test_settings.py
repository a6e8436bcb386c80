"""Settings readers fail loudly on malformed values instead of guessing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from pizzaqueue.settings import env_bool, env_float, env_int, env_networks
from tests.base import ROOT


def test_a_boolean_reads_the_usual_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAG", "False")
    assert env_bool("FLAG", True) is False
    monkeypatch.setenv("FLAG", "yes")
    assert env_bool("FLAG", False) is True


def test_a_boolean_that_is_neither_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="FLAG must be a boolean"):
        env_bool("FLAG", True)


def test_numbers_are_parsed_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNT", "12")
    monkeypatch.setenv("SECONDS", "0.5")
    assert env_int("COUNT", 1, minimum=1) == 12
    assert env_float("SECONDS", 1.0, minimum=0.1) == 0.5
    assert env_int("UNSET_COUNT", 7) == 7


def test_a_malformed_or_out_of_range_number_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNT", "twelve")
    with pytest.raises(ImproperlyConfigured, match="COUNT must be an integer, got 'twelve'"):
        env_int("COUNT", 1)
    monkeypatch.setenv("SECONDS", "0.01")
    with pytest.raises(ImproperlyConfigured, match="SECONDS must be at least 0.05, got 0.01"):
        env_float("SECONDS", 1.0, minimum=0.05)


def test_a_heartbeat_timeout_shorter_than_two_beats_is_refused_at_start() -> None:
    environment = {**os.environ, "PIZZAQUEUE_HEARTBEAT_INTERVAL": "5", "PIZZAQUEUE_HEARTBEAT_TIMEOUT": "8"}
    started = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )

    assert started.returncode != 0
    assert (
        "PIZZAQUEUE_HEARTBEAT_TIMEOUT (8) must be at least twice PIZZAQUEUE_HEARTBEAT_INTERVAL (5)." in started.stderr
    )


def test_trusted_proxies_must_be_addresses_or_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXIES", "10.0.0.0/8, ::1")
    assert env_networks("PROXIES") == ["10.0.0.0/8", "::1"]
    monkeypatch.setenv("PROXIES", "10.0.0.0/8,lb.internal")
    with pytest.raises(ImproperlyConfigured, match="PROXIES must list IP addresses or networks, got 'lb.internal'"):
        env_networks("PROXIES")
