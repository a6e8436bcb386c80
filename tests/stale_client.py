"""A client that keeps writing to one node of the cluster, whatever becomes of it.

Run on the old primary's own machine (tests/processes/test_failover.py runs it
in that node's namespace, with DATABASE_URL naming that node alone): it places
orders one after another through the engine's `queue.place`, each with the
key `stale-<n>`, and writes a line `<monotonic time> <key>` the moment a
placement returns, i.e. is confirmed. A failure is written as
`<time> error <message>`, the connection dropped and the next order tried.

    python -m tests.stale_client OUTPUT SECONDS
"""

from __future__ import annotations

import os
import sys
import time

import django


def main(output: str, seconds: float) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pizzaqueue.settings")
    django.setup()
    from django.db import connections

    from orders.intake import clean_order_request
    from tests.factory import order_data
    from workers import queue

    deadline = time.monotonic() + seconds
    with open(output, "a", buffering=1) as log:
        number = 0
        while time.monotonic() < deadline:
            number += 1
            key = f"stale-{number}"
            try:
                queue.place(
                    clean_order_request(order_data(area=f"area-{number % 7}", note="0.02")), idempotency_key=key
                )
            except Exception as error:  # noqa: BLE001 - written down: the test reads it
                log.write(f"{time.monotonic()} error {str(error).splitlines()[0] if str(error) else error!r}\n")
                connections.close_all()
                time.sleep(0.2)
                continue
            log.write(f"{time.monotonic()} {key}\n")
            time.sleep(0.02)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
