"""SPEC §7b and §10: a web tier of two daphne processes behind real HAProxy (deploy/haproxy.cfg).

Each daphne is SIGKILLed in turn mid-order and restarted. Tracking pages and
the board, open in Chromium through HAProxy, must carry on without a reload
and show every event once; API clients retrying with their Idempotency-Key
must lose no confirmed order and get no second order for a key.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, BrowserContext, Page, expect
from rest_framework.authtoken.models import Token

from orders import roles
from orders.timeline import event_message
from tests.base import in_role, wait_until
from tests.conftest import WorkerProcesses
from tests.factory import make_order, order_data
from tests.webtier import WebTier, post_order
from workers.models import Order, OrderEvent, Worker

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

TIER_ENV = {
    "SECRET_KEY": "web-tier-test-key-not-secret",
    # A margherita takes ~20 s: every order is mid-way through both kills.
    "PIZZAQUEUE_KITCHEN_SPEED": "0.5",
    "PIZZAQUEUE_API_CREATE_RATE": "100000/minute",
}

# Every WebSocket the page opens, with when it opened and closed (performance.now(), ms).
RECORD_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.sockets = [];
  window.WebSocket = function (url, protocols) {
    const socket = protocols === undefined ? new Native(url) : new Native(url, protocols);
    const record = { url: url, created: performance.now(), opened: null, closed: null };
    window.sockets.push(record);
    socket.addEventListener("open", () => { record.opened = performance.now(); });
    socket.addEventListener("close", () => { record.closed = performance.now(); });
    return socket;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
})();
"""

# Every event id the board shows, in arrival order (the list itself keeps only 50).
RECORD_BOARD = """
window.seen = [];
new MutationObserver((changes) => {
  for (const change of changes) {
    for (const node of change.addedNodes) {
      if (node.dataset && node.dataset.id) { window.seen.push(Number(node.dataset.id)); }
    }
  }
}).observe(document.getElementById("events"), { childList: true });
"""


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context()
    context.add_init_script(RECORD_SOCKETS)
    yield context
    context.close()


def live(page: Page) -> bool:
    """The page's stream is open now (its last socket opened and has not closed)."""
    return bool(
        page.evaluate(
            "(s => s.length > 0 && s[s.length-1].opened !== null && s[s.length-1].closed === null)(window.sockets)"
        )
    )


def kill_each_daphne_in_turn(tier: WebTier, pages: list[Page]) -> None:
    """SIGKILL one daphne, wait until HAProxy has marked it down and every page is
    live again (through the other), restart it, then the same for the next."""
    for daphne in tier.daphnes:
        tier.kill(daphne)
        wait_until(lambda d=daphne: tier.server_states().get(d.name) != "UP", timeout=15, what=f"{daphne.name} down")
        wait_until(lambda: all(live(p) for p in pages), timeout=15, what="every page live again")
        tier.restart(daphne, **TIER_ENV)


def test_tracking_pages_and_the_board_keep_every_event_through_haproxy_while_each_daphne_is_killed(
    web_tier: WebTier, worker_processes: WorkerProcesses, context: BrowserContext
) -> None:
    web_tier.start(**TIER_ENV)
    worker_processes.start("--name", "shop-1", "--concurrency", "3", **TIER_ENV)
    wait_until(lambda: Worker.objects.live().count() == 1, what="the kitchen")
    operator = User.objects.create_user("operator", password="pizza-oven-42", is_staff=True)  # noqa: S106
    in_role(operator, roles.OPERATORS)

    board = context.new_page()
    board.goto(web_tier.url("/board/"))
    board.fill("#id_username", "operator")
    board.fill("#id_password", "pizza-oven-42")
    board.click("button[type=submit]")
    board.wait_for_url(re.compile(r"/board/$"))
    expect(board.locator("#live-state")).to_have_text("● live")
    board.evaluate(RECORD_BOARD)
    board_after = int(board.locator("#events").get_attribute("data-after") or 0)

    orders = [make_order(area=f"area-{n}") for n in range(3)]
    pages = []
    for order in orders:
        page = context.new_page()
        page.goto(web_tier.url(f"/orders/{order.id}/"))
        expect(page.locator("#live-state")).to_have_text("● live")
        page.evaluate("window.sameDocument = true")  # gone if the page reloads
        pages.append(page)
    wait_until(
        lambda: Order.objects.filter(status=Order.Status.PREPARING).exclude(stage="").count() == 3,
        what="every order in the kitchen",
    )

    kill_each_daphne_in_turn(web_tier, [board, *pages])
    assert Order.objects.exclude(status=Order.Status.DONE).exists(), "the orders finished before the kills were over"

    for order, page in zip(orders, pages, strict=True):
        expect(page.locator("#status")).to_have_text("Ready", timeout=60_000)
        timeline = [event_message(e) for e in OrderEvent.objects.filter(order=order).order_by("id")]
        expect(page.locator("#timeline li .text")).to_have_text([e["text"] for e in timeline if e["public"]])
        assert page.evaluate("window.sameDocument") is True
        # Its stream was cut at least once (both daphnes died) and resumed from its last id.
        sockets = page.evaluate("window.sockets")
        assert len(sockets) >= 2, sockets
        assert all("?after=" in s["url"] for s in sockets[1:]), sockets

    wait_until(lambda: board.evaluate("window.seen.length") >= OrderEvent.objects.filter(id__gt=board_after).count())
    seen = board.evaluate("window.seen")
    assert sorted(seen) == list(
        OrderEvent.objects.filter(id__gt=board_after).order_by("id").values_list("id", flat=True)
    )
    assert len(board.evaluate("window.sockets")) >= 2


class Client(threading.Thread):
    """An integrator placing orders one after another through HAProxy; a request that
    fails (no answer, a 5xx) is sent again with the same Idempotency-Key until answered."""

    def __init__(self, url: str, token: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.stop = url, token, stop
        self.answers: dict[str, list[str]] = {}  # key → the order id of every answer
        self.retries = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                key = str(uuid.uuid4())
                while not self.place(key):
                    self.retries += 1
                    self.stop.wait(0.05)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def place(self, key: str) -> bool:
        answer = post_order(self.url, self.token, key, order_data(area=f"area-{key[:4]}", note=key))
        if answer is None:
            return False
        self.answers.setdefault(key, []).append(answer)
        return True


def test_api_clients_retrying_with_their_key_through_haproxy_lose_no_order_and_get_none_twice_while_each_daphne_is_killed(
    web_tier: WebTier, worker_processes: WorkerProcesses
) -> None:
    web_tier.start(**TIER_ENV)
    worker_processes.start("--name", "shop-1", "--handler", "orders.handlers.noop", "--concurrency", "4", **TIER_ENV)
    integrator = in_role(User.objects.create_user("integrator"), roles.INTEGRATORS)
    token = Token.objects.create(user=integrator).key
    stop = threading.Event()
    clients = [Client(web_tier.url("/api/orders/"), token, stop) for _ in range(3)]
    for client in clients:
        client.start()
    wait_until(lambda: Order.objects.count() >= 20, what="orders flowing")

    for daphne in web_tier.daphnes:
        web_tier.kill(daphne)
        wait_until(lambda d=daphne: web_tier.server_states().get(d.name) != "UP", timeout=15, what="daphne down")
        before = Order.objects.count()
        wait_until(lambda b=before: Order.objects.count() > b + 10, what="orders flowing through the other daphne")
        web_tier.restart(daphne, **TIER_ENV)
    stop.set()
    for client in clients:
        client.join(timeout=30)
        assert client.error is None, client.error

    answers = {key: ids for client in clients for key, ids in client.answers.items()}
    assert len(answers) >= 40
    for key, ids in answers.items():
        # Confirmed means there, once: one order for the key, the one every answer named.
        assert list(
            Order.objects.filter(idempotency_key=f"api:{integrator.pk}:{key}").values_list("id", flat=True)
        ) == [uuid.UUID(ids[0])]
        assert len(set(ids)) == 1
    assert Order.objects.count() == len(answers), "an order no client was told of"
