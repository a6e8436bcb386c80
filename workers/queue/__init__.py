"""The queue operations: every change to an order's state happens in this package.

Each operation is one transaction that writes the change *and* its
`OrderEvent` together (`outbox`), so the timeline, and the outbox that live
updates are read from, never disagree with the order. Views, the API, admin
actions, commands, the worker loop and the monitor call these functions;
nothing else writes an order's status. The rooms:

- `intake`: `place`, `place_many`, idempotency, the claim order (`rank_for`);
- `leases`: `claim` and the worker's fenced writes: `report_stage`,
  `check_lease`, `advance_stage`, `complete_many`, `fail`, `release`,
  `hand_back_unanswered`;
- `operators`: people's actions: `cancel`, `requeue`, `raise_priority`, `purge`;
- `handover`: after the kitchen: `take`, `deliver`, `collect`, `back_to_shelf`;
- `outbox`: writing events and waking listeners;
- `promises`: an order's promised time revised, with the event that tells its customer.

What the monitor does to a departed worker's orders is `workers.recovery`,
beside the monitor. The names below are the ones callers use (`queue.claim`).
"""

from __future__ import annotations

from workers.queue.handover import back_to_shelf, collect, deliver, take
from workers.queue.intake import (
    IdempotencyConflictError,
    OrderRequest,
    Owner,
    not_before_error,
    place,
    place_many,
    rank_for,
    rank_offset,
)
from workers.queue.leases import (
    HANDED_OVER,
    INTERRUPTED,
    Claim,
    advance_stage,
    check_lease,
    claim,
    complete,
    complete_many,
    fail,
    hand_back_unanswered,
    lease_duration,
    release,
    report_stage,
    retry_delay,
)
from workers.queue.operators import (
    InvalidTransitionError,
    OrderNotFoundError,
    cancel,
    purge,
    raise_priority,
    requeue,
)
from workers.queue.outbox import notify_work
from workers.queue.promises import PROMISE_KEPT, Revision, promise_kept, revise_promises

__all__ = [
    "HANDED_OVER",
    "INTERRUPTED",
    "Claim",
    "IdempotencyConflictError",
    "InvalidTransitionError",
    "OrderNotFoundError",
    "OrderRequest",
    "Owner",
    "advance_stage",
    "back_to_shelf",
    "cancel",
    "check_lease",
    "claim",
    "complete",
    "collect",
    "complete_many",
    "deliver",
    "fail",
    "hand_back_unanswered",
    "lease_duration",
    "not_before_error",
    "notify_work",
    "place",
    "place_many",
    "purge",
    "raise_priority",
    "rank_for",
    "rank_offset",
    "release",
    "report_stage",
    "requeue",
    "retry_delay",
    "revise_promises",
    "PROMISE_KEPT",
    "promise_kept",
    "Revision",
    "take",
]
