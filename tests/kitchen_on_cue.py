"""`manage.py worker` in a process whose Django is already loaded, started on cue.

    python -m tests.kitchen_on_cue READY_FILE [worker flags...]

Loads Django, the worker command and the test handlers, creates READY_FILE,
then waits for a line on stdin before running the command. A test can so
start a kitchen at a chosen moment: an interpreter's own start-up takes from
a fraction of a second to several on a loaded machine, and would decide the
moment instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import django


def main() -> None:
    ready, *flags = sys.argv[1:]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pizzaqueue.settings")
    django.setup()
    from django.core.management import call_command

    import tests.handlers  # noqa: F401 - loaded before the cue, as the command would load it
    import workers.management.commands.worker  # noqa: F401

    Path(ready).touch()
    sys.stdin.readline()
    call_command("worker", *flags)


if __name__ == "__main__":
    main()
