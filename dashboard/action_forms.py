"""Forms for the console's write actions; each carries a one-use idempotency key."""

from __future__ import annotations

import uuid
from typing import Any, Self

from django import forms

from store.models import Category, Shop
from store.money import MoneyField
from store.services.prices import MAX_PERCENT, MIN_PERCENT
from store.services.stock import MAX_UNITS

MAX_DELTA = 1_000_000
KEY_MISSING = "Missing idempotency key: reload the form and submit it again."


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


def _reason_field() -> forms.CharField:
    """The optional free-text reason every stock or order action records."""
    return forms.CharField(
        max_length=200,
        required=False,
        widget=forms.TextInput(attrs={"class": "form-control form-control-sm"}),
    )


class IdempotentForm(forms.Form):
    idempotency_key = forms.RegexField(
        regex=r"^[A-Za-z0-9_-]{8,64}$",
        widget=forms.HiddenInput,
        error_messages={"required": KEY_MISSING, "invalid": KEY_MISSING},
    )

    @classmethod
    def fresh(cls, initial: dict[str, Any] | None = None) -> Self:
        """An unbound form with a new key: every render gets its own."""
        return cls(initial={**(initial or {}), "idempotency_key": new_idempotency_key()})

    def rekeyed(self) -> Self:
        """The same submitted values under a fresh key, for re-rendering after an error."""
        data = self.data.copy()  # type: ignore[attr-defined]  # a QueryDict (or a dict)
        data["idempotency_key"] = new_idempotency_key()
        return type(self)(data)


class AdjustForm(IdempotentForm):
    delta = forms.IntegerField(
        label="Change",
        min_value=-MAX_DELTA,
        max_value=MAX_DELTA,
        help_text="Signed: -3 removes three units, 5 adds five.",
        widget=forms.NumberInput(attrs={"class": "form-control form-control-sm", "step": 1}),
    )
    reason = _reason_field()

    def clean_delta(self) -> int:
        delta: int = self.cleaned_data["delta"]
        if delta == 0:
            raise forms.ValidationError("A change of zero does nothing: enter a signed number.")
        return delta


class EditForm(IdempotentForm):
    stock = forms.IntegerField(
        min_value=0,
        max_value=MAX_UNITS,
        widget=forms.NumberInput(attrs={"class": "form-control form-control-sm"}),
    )
    price = MoneyField(label="Price", max_cents=MAX_UNITS)
    reason = _reason_field()
    version = forms.IntegerField(min_value=1, widget=forms.HiddenInput)


class PayForm(IdempotentForm):
    pass


class CancelForm(IdempotentForm):
    reason = _reason_field()
    refunded = forms.BooleanField(
        required=False,
        label="The payment has been refunded",
        help_text="A paid order is cancelled only after its refund.",
        widget=forms.CheckboxInput(attrs={"class": "form-check-input ms-1"}),
    )


class PriceChangeForm(IdempotentForm):
    shop = forms.ModelChoiceField(
        queryset=Shop.objects.order_by("name"),
        required=False,
        empty_label="All shops",
        widget=forms.Select(attrs={"class": "form-select form-select-sm"}),
    )
    category = forms.ModelChoiceField(
        queryset=Category.objects.order_by("name"),
        required=False,
        empty_label="All categories",
        widget=forms.Select(attrs={"class": "form-select form-select-sm"}),
    )
    percent = forms.IntegerField(
        min_value=MIN_PERCENT,
        max_value=MAX_PERCENT,
        help_text=f"Whole percent, {MIN_PERCENT} to +{MAX_PERCENT}; prices round to whole cents.",
        widget=forms.NumberInput(attrs={"class": "form-control form-control-sm"}),
    )
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def clean_percent(self) -> int:
        percent: int = self.cleaned_data["percent"]
        if percent == 0:
            raise forms.ValidationError("A change of 0% does nothing.")
        return percent


class RequeueForm(forms.Form):
    """The event id from the URL: anything but a UUID is simply not found."""

    event = forms.UUIDField()
