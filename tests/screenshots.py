"""The README's screenshots, one per role, taken with Chromium against the demo's own data.

    .venv/bin/python -m tests.screenshots [--out docs/img]

Starts `manage.py demo` on a scratch SQLite database; follows a delivery and a
takeaway order on the customer's tracking page through each step of their
hand-over (on the shelf, out for delivery, delivered; on the counter,
collected), the shop's side tapped by the operator; then runs a dinner rush, cuts
shop-2's power (`manage.py shop down shop-2`) and photographs what each person
sees: a customer whose order moved, the staffed kitchen's display, the
operator's board and admin, the integrator's Swagger UI. Not a test: the
journeys in tests/test_journey_*.py prove the same steps; this keeps the
pictures in docs/img/ true to the demo.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def wait_for(what: str, check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="pizzaqueue-screenshots-"))
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{scratch / 'demo.sqlite3'}"}
    port = free_port()
    base = f"http://localhost:{port}"
    log = open(scratch / "demo.log", "w+")  # noqa: SIM115 - lives with the demo
    demo = subprocess.Popen(  # noqa: S603 - our own command
        # The operator hands the photographed orders over: the stand-ins wait a minute first.
        [sys.executable, "manage.py", "demo", "--port", str(port), "--grace", "1", "--handover-standby", "60"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for("the demo", lambda: urllib.request.urlopen(f"{base}/", timeout=5).status == 200)  # noqa: S310
        time.sleep(3)  # the kitchens register and share the buckets
        printed = (scratch / "demo.log").read_text()
        accounts = {
            "operator": re.search(r"Operator login: +operator / (\S+)", printed),
            "kitchen": re.search(r"Kitchen staff: +kitchen / (\S+)", printed),
            "token": re.search(r"Integrator token: +(\S+)", printed),
        }
        if not all(accounts.values()):
            raise SystemExit(f"the demo printed no accounts:\n{printed}")
        secret = {name: match.group(1) for name, match in accounts.items() if match}
        shoot_handover(base, secret, out, env)
        manage(env, "rush", "--orders", "30", "--areas", "6", "--priority-mix")
        manage(env, "shop", "down", "shop-2", "--wait", "30")
        shoot(base, secret, out, env)
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=60)
        log.close()
        shutil.rmtree(scratch, ignore_errors=True)


def shoot(base: str, secret: dict[str, str], out: Path, env: dict[str, str]) -> None:
    from playwright.sync_api import sync_playwright

    moved = manage(env, "shell", "-v", "0", "-c", MOVED_ORDER).strip().splitlines()[-1]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        phone = browser.new_context(viewport={"width": 430, "height": 900}).new_page()
        phone.goto(f"{base}/orders/{moved}/")
        phone.wait_for_selector("#live-state.is-live")
        phone.screenshot(path=out / "role-customer.png", full_page=True)

        tablet = browser.new_context(viewport={"width": 1024, "height": 768}).new_page()
        log_in(tablet, base, "kitchen", secret["kitchen"])
        tablet.wait_for_selector("#live-state.is-live")
        tablet.screenshot(path=out / "role-kitchen.png", full_page=False)

        laptop = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        log_in(laptop, base, "operator", secret["operator"])
        laptop.wait_for_selector('tr[data-worker="shop-2"] .status-dead, tr[data-worker="shop-2"] .status-late')
        laptop.screenshot(path=out / "role-operator-board.png", full_page=False)
        laptop.goto(f"{base}/admin/workers/order/?q=old-town")
        laptop.screenshot(path=out / "role-operator-admin.png", full_page=False)

        docs = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        docs.goto(f"{base}/api/docs/")
        docs.click(".swagger-ui .btn.authorize")
        scheme = docs.locator(".modal-ux .auth-container", has_text="tokenAuth")
        scheme.locator("input").fill(f"Token {secret['token']}")
        scheme.locator(".btn.modal-btn.auth.authorize").click()
        scheme.locator(".btn-done").click()
        docs.screenshot(path=out / "role-integrator.png", full_page=False)
        browser.close()


def shoot_handover(base: str, secret: dict[str, str], out: Path, env: dict[str, str]) -> None:
    """The tracking page at each step after the kitchen (docs/img/handover-*.png)."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        phone = browser.new_context(viewport={"width": 430, "height": 900}).new_page()
        staff = browser.new_context(viewport={"width": 1024, "height": 768}).new_page()
        log_in(staff, base, "operator", secret["operator"])

        phone.goto(f"{base}/")
        phone.fill("#id_qty_margherita", "2")
        phone.select_option("#id_size_margherita", "large")
        phone.fill("#id_area", "Old Town")
        phone.fill("#id_address", "1 Harbour Street, 2nd floor")
        phone.fill("#id_phone", "020 7946 0958")
        phone.click("button[type=submit]")
        phone.wait_for_url("**/orders/*/")
        expect(phone.locator("#status")).to_have_text("Ready", timeout=90_000)
        phone.screenshot(path=out / "handover-1-shelf.png", full_page=True)
        order = phone.url.rstrip("/").rsplit("/", 1)[1]
        shop = manage(env, "shell", "-v", "0", "-c", MADE_BY.format(order=order)).strip().splitlines()[-1]
        staff.goto(f"{base}/shelf/{shop}/")
        staff.locator(f'[data-shelf="{order}"] button.take').click()
        expect(phone.locator("#status")).to_have_text("Out for delivery")
        phone.screenshot(path=out / "handover-2-out.png", full_page=True)
        staff.locator(f'[data-out="{order}"]').get_by_role("button", name="Delivered, paid card").click()
        expect(phone.locator("#status")).to_have_text("Delivered")
        phone.screenshot(path=out / "handover-3-delivered.png", full_page=True)

        phone.goto(f"{base}/")
        phone.fill("#id_qty_margherita", "1")
        phone.check("input[name=kind][value=takeaway]")
        phone.select_option("#id_shop", "shop-1")
        phone.fill("#id_customer_name", "Grace")
        phone.click("button[type=submit]")
        phone.wait_for_url("**/orders/*/")
        expect(phone.locator("#status")).to_have_text("Ready", timeout=90_000)
        phone.screenshot(path=out / "handover-4-counter.png", full_page=True)
        order = phone.url.rstrip("/").rsplit("/", 1)[1]
        staff.goto(f"{base}/kitchen/shop-1/")
        staff.locator(f'[data-counter="{order}"]').get_by_role("button", name="Collected, paid cash").click()
        expect(phone.locator("#status")).to_have_text("Collected")
        phone.screenshot(path=out / "handover-5-collected.png", full_page=True)
        browser.close()


def log_in(page: object, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/accounts/login/")  # type: ignore[attr-defined]
    page.fill("#id_username", username)  # type: ignore[attr-defined]
    page.fill("#id_password", password)  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_load_state()  # type: ignore[attr-defined]


# The newest order that moved when shop-2 went down, as `manage.py shell -c` prints it.
MOVED_ORDER = (
    "from workers.models import OrderEvent; "
    "print(OrderEvent.objects.filter(kind='reassigned').order_by('-id').values_list('order_id', flat=True)[0])"
)


# The shop whose kitchen made an order (it waits on that shop's shelf), as `manage.py shell -c` prints it.
MADE_BY = "from workers.models import Order; print(Order.objects.get(pk='{order}').worker.name)"


if __name__ == "__main__":
    main()
