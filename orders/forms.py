"""The customer's order form: fields for people, checked by `intake.clean_order_request`.

The form only gathers what was typed; the one validation of an order is
`clean_order_request`, whose errors (keyed by request field, e.g.
`items[0].quantity`) are put back next to the form field they came from.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from orders import money
from orders.intake import clean_order_request
from orders.models import Pizza, Size
from orders.shops import display_name
from workers.models import Order, Worker
from workers.queue import OrderRequest

# A quantity the live total counts: plain digits, few of them (the intake checks the bounds).
QUANTITY = re.compile(r"[0-9]{1,4}")


class OrderForm(forms.Form):
    # The idempotency key: a new one with every blank form, so submitting the
    # same form twice (a double click, a retry after a timeout) gives one order.
    token = forms.UUIDField(
        widget=forms.HiddenInput,
        error_messages={
            "required": "This form has expired; please check your order and send it again.",
            "invalid": "This form has expired; please check your order and send it again.",
        },
    )
    customer_name = forms.CharField(
        label="Your name", required=False, max_length=100, help_text="A takeaway order is called by this name."
    )
    kind = forms.ChoiceField(
        label="How", choices=Order.Fulfilment.choices, initial=Order.Fulfilment.DELIVERY, widget=forms.RadioSelect
    )
    area = forms.CharField(
        label="Delivery area",
        required=False,
        max_length=64,
        help_text="Your postcode or district; orders for one area go to one shop.",
    )
    address = forms.CharField(
        label="Address",
        required=False,
        max_length=200,
        help_text="Street and house number, floor or door.",
        widget=forms.TextInput(attrs={"autocomplete": "street-address"}),
    )
    phone = forms.CharField(
        label="Phone",
        required=False,
        max_length=40,
        help_text="For the driver, if they cannot find you.",
        widget=forms.TextInput(attrs={"autocomplete": "tel", "inputmode": "tel", "type": "tel"}),
    )
    shop = forms.ChoiceField(label="Collect from", required=False)
    note = forms.CharField(label="Note for the kitchen", required=False, widget=forms.Textarea(attrs={"rows": 2}))

    # Which fields only one kind of order has: the page shows them for that kind alone.
    FOR_KIND = {"area": "delivery", "address": "delivery", "phone": "delivery", "shop": "takeaway"}

    def __init__(self, *args: Any, pizzas: list[Pizza], shops: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pizzas = pizzas
        shop = self.fields["shop"]
        if isinstance(shop, forms.ChoiceField):
            shop.choices = [("", "—"), *((name, display_name(name)) for name in shops)]
        self.fields["note"].widget.attrs["maxlength"] = settings.PIZZAQUEUE_MAX_NOTE
        for pizza in pizzas:
            # Plain text on the server side: bounds and numbers are checked by the intake.
            self.fields[f"qty_{pizza.slug}"] = forms.CharField(
                label=pizza.name,
                required=False,
                initial="0",
                widget=forms.NumberInput(
                    attrs={"min": 0, "max": settings.PIZZAQUEUE_MAX_QUANTITY, "inputmode": "numeric"}
                ),
            )
            self.fields[f"size_{pizza.slug}"] = forms.ChoiceField(
                label=f"{pizza.name} size", choices=Size.choices, initial=Size.MEDIUM, required=False
            )
        self.order_request: OrderRequest | None = None

    @classmethod
    def for_menu(cls, data: Any = None, **kwargs: Any) -> OrderForm:
        pizzas = list(Pizza.objects.filter(available=True))
        shops = list(Worker.objects.in_ring().order_by("name").values_list("name", flat=True))
        return cls(data, pizzas=pizzas, shops=shops, **kwargs)

    def menu_rows(self) -> list[tuple[Pizza, str, forms.BoundField, forms.BoundField]]:
        """(pizza, its prices by size, quantity field, size field) for each pizza on the menu."""
        return [
            (
                p,
                " · ".join(f"{size.label[0]} {money.money(p.price(size))}" for size in Size),
                self[f"qty_{p.slug}"],
                self[f"size_{p.slug}"],
            )
            for p in self.pizzas
        ]

    def quote(self) -> tuple[Decimal, Decimal, int]:
        """(total, delivery fee, pizzas) of what the form holds so far, for the live total: the
        pizzas chosen with a sensible quantity and size, priced from the menu as the intake will.
        Anything not yet valid counts for nothing here; the intake reports it on sending."""
        data = self.data if self.is_bound else {}
        items, count = [], 0
        for pizza in self.pizzas:
            quantity = str(data.get(f"qty_{pizza.slug}") or "").strip()
            size = data.get(f"size_{pizza.slug}") or Size.MEDIUM
            if not QUANTITY.fullmatch(quantity) or size not in Size.values:
                continue
            if 1 <= int(quantity) <= settings.PIZZAQUEUE_MAX_QUANTITY:
                items.append({"price": pizza.price(size), "quantity": int(quantity)})
                count += int(quantity)
        delivery = (data.get("kind") or Order.Fulfilment.DELIVERY) == Order.Fulfilment.DELIVERY
        area = str(data.get("area") or "")[:64].replace("\x00", "")
        fee = money.delivery_fee(area) if delivery and items else Decimal(0)
        return money.total(items, fee), fee, count

    def detail_fields(self) -> list[tuple[forms.BoundField, str]]:
        """Each detail field, and the kind of order it is for ("" for both): the page shows it for that kind only."""
        names = ("kind", "area", "address", "phone", "shop", "customer_name", "note")
        return [(self[name], self.FOR_KIND.get(name, "")) for name in names]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        items, fields_of_item = [], []
        for pizza in self.pizzas:
            quantity = (data.get(f"qty_{pizza.slug}") or "").strip()
            if quantity in ("", "0"):
                continue
            items.append(
                {"pizza": pizza.slug, "size": data.get(f"size_{pizza.slug}") or Size.MEDIUM, "quantity": quantity}
            )
            fields_of_item.append(pizza.slug)
        if not items:
            raise ValidationError("Choose at least one pizza.")
        kind = data.get("kind") or Order.Fulfilment.DELIVERY
        request = {
            "items": items,
            "kind": kind,
            "customer_name": data.get("customer_name", ""),
            "note": data.get("note", ""),
        }
        # A field of the other kind of order is left out, whatever was typed in it before switching.
        request |= {name: data[name] for name, only_for in self.FOR_KIND.items() if only_for == kind and data.get(name)}
        try:
            self.order_request = clean_order_request(request)
        except ValidationError as exc:
            self.add_intake_errors(exc, fields_of_item)
        return data

    def add_intake_errors(self, error: ValidationError, fields_of_item: list[str] | None = None) -> None:
        """Put the intake's errors (keyed by request field) on the form fields they concern."""
        slugs = fields_of_item or [p.slug for p in self.pizzas]
        for key, messages in error.message_dict.items():
            field = None
            if key.startswith("items[") and "]" in key:
                index = key[len("items[") : key.index("]")]
                part = key[key.index("]") + 1 :].lstrip(".")
                if index.isdigit() and int(index) < len(slugs):
                    field = f"{'size' if part == 'size' else 'qty'}_{slugs[int(index)]}"
            elif key in self.fields:
                field = key
            for message in messages:
                self.add_error(field, message)
