"""The roles, as Django groups with permissions (made by migration `orders.0005`).

- *kitchen staff*: the kitchen display of the shops they staff
  (`KitchenStaff` rows) and its actions, nothing else;
- *operators* (staff accounts): the board, admin and every operator action
  (requeue, cancel, rush, drain, declare dead);
- *integrators*: the REST API, for the orders they place;
- *drivers*: the shelf of the shops they drive for (`Driver` rows): take a
  delivery order, deliver it and take the payment.

Staff at a shop's counter are its kitchen staff: the kitchen display shows
the takeaway orders waiting to be collected and paid.

The code checks permissions, never group names, so a deployment may grant
them any other way Django allows (to one user, to a group of its own).
"""

from __future__ import annotations

from typing import Any

from orders.models import Driver, KitchenStaff
from workers.models import reads_every_order

KITCHEN_STAFF = "kitchen staff"
OPERATORS = "operators"
INTEGRATORS = "integrators"
DRIVERS = "drivers"

# Placing orders through the API (integrators).
PLACE_ORDERS = "workers.add_order"
# Requeue, cancel and rush any order (operators); `Order.objects.changeable_by` reads it too.
CHANGE_ORDERS = "workers.change_order"
# Drain a kitchen, declare it dead (operators).
CHANGE_KITCHENS = "workers.change_worker"
# A kitchen display, for the shops one staffs (kitchen staff).
WORK_KITCHEN = "orders.work_kitchen_display"
# A shop's shelf: take, deliver and be paid for its delivery orders (drivers).
DRIVE = "orders.drive_for_shop"


# Each role's permissions, as (app label, codename).
ROLES: dict[str, list[tuple[str, str]]] = {
    KITCHEN_STAFF: [("orders", "work_kitchen_display")],
    OPERATORS: [
        ("workers", "view_order"),
        ("workers", "change_order"),
        ("workers", "view_orderevent"),
        ("workers", "view_worker"),
        ("workers", "change_worker"),
        ("workers", "view_bucket"),
        ("workers", "view_bucketmove"),
        ("workers", "view_monitorlease"),
        ("orders", "view_pizza"),
        ("orders", "add_pizza"),
        ("orders", "change_pizza"),
        ("orders", "view_kitchenstaff"),
        ("orders", "add_kitchenstaff"),
        ("orders", "change_kitchenstaff"),
        ("orders", "delete_kitchenstaff"),
        ("orders", "view_driver"),
        ("orders", "add_driver"),
        ("orders", "change_driver"),
        ("orders", "delete_driver"),
        ("orders", "view_deliveryfee"),
        ("orders", "add_deliveryfee"),
        ("orders", "change_deliveryfee"),
        ("orders", "delete_deliveryfee"),
    ],
    INTEGRATORS: [("workers", "add_order")],
    DRIVERS: [("orders", "drive_for_shop")],
}


def create_roles(group_model: Any, permission_model: Any) -> None:
    """Create each role's group with exactly its permissions, as far as they exist yet.

    Takes the models as arguments so the data migrations can pass their historical ones:
    a permission of a model a later migration makes is granted when that migration runs
    this again (`orders.0008`).
    """
    for name, permissions in ROLES.items():
        group, _created = group_model.objects.get_or_create(name=name)
        group.permissions.set(
            [
                found
                for app, codename in permissions
                if (found := permission_model.objects.filter(content_type__app_label=app, codename=codename).first())
            ]
        )


def works_kitchen(user: Any, shop: str) -> bool:
    """Whether the user may use this shop's kitchen display and its actions:
    an operator may use any, kitchen staff only the shops they staff."""
    if not (user.is_active and user.is_authenticated):
        return False
    if user.has_perm(CHANGE_ORDERS):
        return True
    return user.has_perm(WORK_KITCHEN) and KitchenStaff.objects.filter(user=user, shop=shop).exists()


def drives_for(user: Any, shop: str) -> bool:
    """Whether the user may use this shop's shelf: its drivers (and operators, who may look)."""
    if not (user.is_active and user.is_authenticated):
        return False
    if user.has_perm(CHANGE_ORDERS):
        return True
    return user.has_perm(DRIVE) and Driver.objects.filter(user=user, shop=shop).exists()


def works_shop(user: Any, shop: str) -> bool:
    """Whether the user is one of the shop's people: its kitchen staff, its drivers, or an operator."""
    return works_kitchen(user, shop) or drives_for(user, shop)


def shop_of(order: Any) -> str:
    """The shop an order belongs to for its people: the one it is pinned to, else the kitchen
    that has (or had) it. "" while a delivery order waits in the queue for any shop."""
    if order.pinned_shop:
        return str(order.pinned_shop)
    return order.worker.name if order.worker_id and order.worker is not None else ""


def sees_customer(user: Any, order: Any) -> bool:
    """Whether a logged-in person may read an order's personal data (name, address, phone):
    operators, and the people of the order's shop (its kitchen staff, its drivers). The browser that
    placed it is decided by its placing key (`Order.objects.changeable_by`), not here."""
    if not (user.is_active and user.is_authenticated):
        return False
    if reads_every_order(user):
        return True
    shop = shop_of(order)
    return bool(shop) and works_shop(user, shop)
