"""Behind the shipped HAProxy (deploy/haproxy.cfg), run as deploy/web.env says, each
client is itself, not the proxy: a customer on another machine is refused /metrics,
which this machine may scrape through the same proxy. Without the trusted proxy
every request would come from the proxy's loopback address and pass."""

from __future__ import annotations

import sys

import pytest

from tests.hosts import Hosts
from tests.webtier import WebTier

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

# What another machine's browser does: one GET, printing the status it got.
FETCH = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
        print(response.status)
except urllib.error.HTTPError as refused:
    print(refused.code)
"""


def test_behind_haproxy_a_client_on_another_machine_is_itself_and_refused_metrics(
    web_tier: WebTier, hosts: Hosts
) -> None:
    customer = hosts.add("customer")
    # Listening for the other host's link too (torn down with the test), served under that address.
    web_tier.start(listen_on="0.0.0.0", ALLOWED_HOSTS=f"127.0.0.1,{customer.gateway}")  # noqa: S104

    def fetch(path: str) -> str:
        answer = customer.run([sys.executable, "-c", FETCH, f"http://{customer.gateway}:{web_tier.port}{path}"])
        assert answer.returncode == 0, answer.stderr
        return answer.stdout.strip()

    assert fetch("/healthz") == "200"  # the customer reaches the shop through the proxy
    assert fetch("/metrics") == "403"  # as the customer's address, not the proxy's
    assert web_tier.get("/metrics") == 200  # this machine, through the same proxy, is on the allow-list
