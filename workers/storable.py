"""Text from handlers, made storable before it reaches the database.

A handler is the shop's code, and whatever it raises or reports ends up in
a row: an error's text in `Order.last_error` and its event, a stage name in
`Order.stage`. PostgreSQL refuses a NUL in text, a lone surrogate cannot be
encoded to UTF-8 at all (on either engine), and a stage longer than its
column is refused by PostgreSQL and kept whole by SQLite. A write refused for
its text fails again on every retry, so an order whose text is not storable
would wedge the kitchen that holds it, or loop between kitchens for ever
(SPEC §4.12). So every such text passes through here first: the characters no
engine stores are replaced and the length is bounded, the same on both
engines.
"""

from __future__ import annotations

import re

# What takes the place of a character no engine can store.
REPLACEMENT = "\ufffd"
# NUL, and the surrogate code points (only ever lone in a Python str: a pair is one character).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# `Order.stage` and `OrderEvent.stage`.
STAGE_LENGTH = 20
# `Order.last_error` is a TextField: bounded so one failure cannot write megabytes.
ERROR_LENGTH = 2000
# `OrderEvent.message`.
MESSAGE_LENGTH = 500


def text(value: object, limit: int) -> str:
    """`value` as a str any engine stores, at most `limit` characters."""
    try:
        as_text = value if type(value) is str else str(value)
    except Exception:  # a handler's object whose __str__ raises
        as_text = f"<unprintable {type(value).__name__}>"
    return UNSTORABLE.sub(REPLACEMENT, as_text)[:limit]


def stage(name: object) -> str:
    """A stage name as `Order.stage` stores it."""
    return text(name, STAGE_LENGTH)


def error(exc: BaseException) -> str:
    """What a handler raised, as `Order.last_error` stores it: "Type: message"."""
    try:
        detail = str(exc)
    except Exception:  # an exception whose __str__ raises is still a failure to record
        detail = "<unprintable message>"
    return text(f"{type(exc).__name__}: {detail}", ERROR_LENGTH)


def message(value: object) -> str:
    """An event's message as `OrderEvent.message` stores it."""
    return text(value, MESSAGE_LENGTH)
