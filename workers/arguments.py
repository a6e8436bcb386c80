"""argparse `type=` validators shared by the management commands.

A bad flag is refused by argparse with a message naming the flag, before a
command touches the database.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _number(cast: Callable[[str], float], noun: str, minimum: float, inclusive: bool) -> Callable[[str], float]:
    bound = f"at least {minimum:g}" if inclusive else f"above {minimum:g}"

    def parse(value: str) -> float:
        try:
            number = cast(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not {noun}") from None
        if number < minimum or (number == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {number:g}")
        return number

    return parse


positive_int = _number(int, "a whole number", 1, inclusive=True)
non_negative_int = _number(int, "a whole number", 0, inclusive=True)
positive_float = _number(float, "a number", 0, inclusive=False)
non_negative_float = _number(float, "a number", 0, inclusive=True)
