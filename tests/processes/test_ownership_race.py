"""Who may see and change which order (SPEC §9), through a real server: two
integrators racing over each other's ids get only 404s (the rest of ownership
is in tests/shop/test_ownership.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from orders import roles
from tests.base import ROOT, in_role
from tests.conftest import Daphne
from workers.models import Order

RACER = textwrap.dedent(
    """
    import json, os, sys, urllib.error, urllib.request

    base, token, mine_path, theirs_path, rounds = sys.argv[1:5] + [int(sys.argv[5])]

    def call(method, path, body=None):
        request = urllib.request.Request(base + path, method=method, data=body,
            headers={"Authorization": "Token " + token, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    body = json.dumps({"items": [{"pizza": "margherita", "size": "small", "quantity": 1}],
        "address": "1 Harbour Street", "phone": "+442079460958"}).encode()
    mine, answers = [], []
    theirs = []
    for n in range(rounds):
        status, content = call("POST", "/api/orders/", body)
        assert status == 201, (status, content)
        mine.append(json.loads(content)["id"])
        try:
            theirs = json.load(open(theirs_path))
        except (OSError, ValueError):
            pass
        for order_id in theirs[-3:]:
            answers.append(["read", *call("GET", f"/api/orders/{order_id}/")[:1]])
            answers.append(["cancel", *call("POST", f"/api/orders/{order_id}/cancel/")[:1]])
        with open(mine_path + ".tmp", "w") as out:
            json.dump(mine, out)
        os.replace(mine_path + ".tmp", mine_path)
    print(json.dumps({"mine": mine, "answers": answers}))
    """
)


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_two_integrators_racing_over_each_others_ids_get_only_404s(daphne: Daphne, tmp_path: Any) -> None:
    daphne.start(PIZZAQUEUE_API_CREATE_RATE="")
    tokens = {
        name: Token.objects.create(user=in_role(User.objects.create_user(name), roles.INTEGRATORS)).key
        for name in ("alice", "bob")
    }
    # Each racer publishes its ids to a file the other reads while both place and probe.
    ids = {name: str(tmp_path / f"{name}.json") for name in tokens}
    other = {"alice": "bob", "bob": "alice"}
    racers = {
        name: subprocess.Popen(
            [sys.executable, "-c", RACER, daphne.origin, token, ids[name], ids[other[name]], "15"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, token in tokens.items()
    }
    results = {}
    for name, racer in racers.items():
        out, _ = racer.communicate(timeout=120)
        assert racer.returncode == 0, out
        results[name] = json.loads(out)

    probes = [answer for result in results.values() for answer in result["answers"]]
    assert probes, "the racers never saw each other's ids"
    assert {status for _what, status in probes} == {404}
    for name, result in results.items():
        orders = Order.objects.filter(pk__in=result["mine"])
        assert {o.placed_by.username for o in orders} == {name}
        assert set(orders.values_list("status", flat=True)) == {Order.Status.QUEUED}
