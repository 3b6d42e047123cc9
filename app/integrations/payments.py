"""What every payment gateway speaks in: our own small types, never a provider's SDK objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CheckoutRequest:
    order_id: str
    user_id: str
    customer_email: str | None
    product_name: str
    amount: int  # minor units
    currency: str
    quantity: int = 1
    recurring_interval: str | None = None  # "month" for subscriptions
    success_url: str = ""
    cancel_url: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HostedCheckout:
    session_id: str
    url: str


class PaymentGatewayError(Exception):
    """The provider refused or failed. `retryable` tells a temporary failure (5xx, 429, timeout) from a
    refusal of our request."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class InvalidPaymentSignature(Exception):
    pass


def json_object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
