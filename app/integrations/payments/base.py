"""What every payment gateway speaks: one Protocol and our own small types, never a provider's SDK objects
or JSON.

A gateway opens checkouts of our orders and turns its provider's signed webhooks into
`(event_id, PaymentEvent)`. `PaymentEvent` is a small typed union of what the billing services act on;
everything a provider-specific event needs to be told apart (its statuses, phases, amounts and ids) is
read here, in the provider's module, so app/services/billing never reads provider JSON."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, TypeAlias

# --- checkouts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckoutRequest:
    """One checkout of one of our orders, whichever provider takes it."""

    order_id: uuid.UUID
    # The same key never opens a second checkout at the provider (a retried call gets the first one).
    idempotency_key: str
    product_name: str
    amount: int  # minor units of `currency`
    currency: str
    customer_email: str | None
    metadata: dict[str, str]  # ours (order_id, user_id, plan_id): the provider echoes it in its events
    success_url: str
    cancel_url: str
    recurring_interval: str | None = None  # "month": a subscription
    # A product defined at the provider (Dodo sells products); with `product_priced` it also sets the price,
    # otherwise the customer pays `amount` for it.
    product_id: str | None = None
    product_priced: bool = False


@dataclass(frozen=True)
class Checkout:
    """The provider's checkout of one of our orders: its id there (Stripe's Checkout Session, Razorpay's
    order, Dodo's checkout session) and the page the customer pays on (none for Razorpay, whose checkout
    opens in the client with the gateway's `client_key`)."""

    checkout_id: str
    url: str | None


# --- errors ----------------------------------------------------------------------------------------


class PaymentGatewayError(Exception):
    """The provider refused or failed. `retryable` tells a temporary failure (5xx, 429, timeout) from a
    refusal of our request."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class InvalidSignature(Exception):
    """A webhook or a client's payment confirmation whose signature does not hold (missing, wrong, too old,
    no secret to check it with), or a signed body that is no event."""


# --- what an event says about our orders -----------------------------------------------------------


@dataclass(frozen=True)
class OrderRef:
    """How a provider names one of our orders: our id (the `order_id` of the metadata our checkout gave
    it) and/or its own checkout of it. Either may be missing."""

    order_id: uuid.UUID | None = None
    checkout_id: str | None = None


@dataclass(frozen=True)
class PaymentRef:
    """A payment at the provider (Stripe's payment intent, Razorpay's and Dodo's payment ids), with what the
    event itself tells of the order it pays (often nothing: see `PaymentGateway.checkout_of`)."""

    payment_id: str
    order: OrderRef = OrderRef()


@dataclass(frozen=True)
class Subscriber:
    """Who a subscription is for, from the metadata our checkout gave it."""

    user_id: uuid.UUID
    plan_ref: str


@dataclass(frozen=True)
class TaxId:
    type: str | None
    value: str | None


@dataclass(frozen=True)
class TaxDetails:
    """What a checkout collected for invoices: the billing country, tax ids, the tax added (minor units)."""

    country: str | None = None
    tax_ids: tuple[TaxId, ...] = ()
    tax_amount: int | None = None


# --- events ----------------------------------------------------------------------------------------

DisputeEffect = Literal["chargeback", "won"]


@dataclass(frozen=True, kw_only=True)
class Event:
    """What every event carries for the webhook inbox: the provider's type and the event as it was sent
    (stored, never read by the services)."""

    type: str
    payload: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class CheckoutPaid(Event):
    """The customer paid a checkout: `amount` (minor units of `currency`, None when the event does not
    say) by `payment_id`. Stripe's subscription checkouts name the subscription they opened."""

    order: OrderRef
    payment_id: str | None
    amount: int | None
    currency: str | None
    subscription_id: str | None = None
    tax: TaxDetails | None = None


@dataclass(frozen=True, kw_only=True)
class CheckoutPending(Event):
    """A checkout was completed but its payment is still on its way (a delayed payment method)."""

    order: OrderRef
    tax: TaxDetails | None = None


@dataclass(frozen=True, kw_only=True)
class PaymentFailed(Event):
    """A checkout's payment failed, or the checkout expired unpaid."""

    order: OrderRef
    reason: str


@dataclass(frozen=True, kw_only=True)
class Refunded(Event):
    """The provider refunded part or all of a payment. `amount` (minor units) is this refund's own, or
    with `cumulative` the payment's refunded total so far (Stripe's `amount_refunded`); `charged` is what
    the payment charged, when the event says (Stripe). `refund_id` is unique per refund (Stripe: per
    charge and refunded total)."""

    payment: PaymentRef
    refund_id: str
    amount: int
    cumulative: bool = False
    charged: int | None = None


@dataclass(frozen=True, kw_only=True)
class Disputed(Event):
    """News of a dispute (chargeback) of a payment. `effect` is what it means for the money: a chargeback
    stands (open or lost), or we won it back; None for news that moves no money (an inquiry, a step of
    the argument). `dispute_id` is unique per provider, plus the round for a dispute re-opened after we
    won it. `amount` (minor units of `currency`) is None when the whole payment is disputed or the
    provider's amount cannot be read."""

    payment: PaymentRef
    dispute_id: str
    effect: DisputeEffect | None
    amount: int | None = None
    currency: str | None = None


@dataclass(frozen=True, kw_only=True)
class SubscriptionPaid(Event):
    """A billing period of a subscription was paid. The period is its invoice (Stripe) or, for a provider
    that names none, the subscription's billing date it started on (`period_start`, Dodo)."""

    subscription_id: str
    subscriber: Subscriber
    invoice_id: str | None = None
    period_start: str | None = None
    current_period_end: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class SubscriptionChanged(Event):
    """A subscription's status changed; `ended` when it will not renew any more (cancelled, expired)."""

    subscription_id: str
    status: str
    ended: bool
    cancel_at_period_end: bool = False
    current_period_end: datetime | None = None
    subscriber: Subscriber | None = None


@dataclass(frozen=True, kw_only=True)
class Unhandled(Event):
    """Any other event (or one that names nothing we could act on): stored and answered `ignored`."""


PaymentEvent: TypeAlias = (
    CheckoutPaid
    | CheckoutPending
    | PaymentFailed
    | Refunded
    | Disputed
    | SubscriptionPaid
    | SubscriptionChanged
    | Unhandled
)


# --- what the billing services may ask the provider ------------------------------------------------


@dataclass(frozen=True)
class InvoicePayment:
    """A payment made against an invoice (Stripe's `invoice_payment` object), in our own terms.

    `status` is open|paid|canceled; `amount_paid` (minor units of `currency`) is None until it is paid."""

    invoice_id: str
    status: str
    amount_paid: int | None
    amount_requested: int
    currency: str


@dataclass(frozen=True)
class InvoiceSubscription:
    """The subscription an invoice bills, and our order that opened it (from its metadata), if any."""

    subscription_id: str
    order_id: uuid.UUID | None


class PaymentGateway(Protocol):
    """One payment provider. Every method raises PaymentGatewayError when the provider refuses or fails,
    except `verify` and `verify_client_payment`, which raise InvalidSignature."""

    @property
    def client_key(self) -> str | None:
        """The public key a client-side checkout opens with (Razorpay's key id); None for hosted pages."""
        ...

    @property
    def webhooks_enabled(self) -> bool:
        """A webhook secret is configured, so `verify` can accept events."""
        ...

    async def create_checkout(self, request: CheckoutRequest) -> Checkout: ...

    def verify(self, body: bytes, headers: Mapping[str, str]) -> tuple[str, PaymentEvent]:
        """`(event_id, event)` of a webhook delivery whose signature holds on the raw body (`headers` is
        the whole request's). The event id is what redeliveries are recognised by."""
        ...

    def read_event(self, payload: dict[str, Any]) -> PaymentEvent:
        """The event of a delivery `verify` accepted earlier, from its stored body (`PaymentEvent.payload`):
        what an admin's replay of a stored event applies. Never checks a signature (there is none left)."""
        ...

    def verify_client_payment(self, checkout_id: str, payment_id: str, signature: str) -> None:
        """A client's proof that `payment_id` paid `checkout_id` (Razorpay Checkout's handler result);
        providers that confirm payments by webhook only refuse every proof."""
        ...

    async def checkout_of(self, payment_id: str) -> OrderRef | None:
        """Which of our checkouts made this payment, as the provider has it now: a refund or a dispute can
        be told before the payment's confirmation. None when it knows of none (or has nothing to say
        beyond what its events carry)."""
        ...

    async def invoices_paid_by(self, payment_id: str) -> list[InvoicePayment]:
        """The invoices this payment paid or is paying, newest first (subscription renewals); empty when
        it is no invoice's payment or the provider bills no invoices."""
        ...

    async def invoice_subscription(self, invoice_id: str) -> InvoiceSubscription | None:
        """The subscription an invoice bills; None for an invoice of no subscription or no invoice."""
        ...

    async def aclose(self) -> None: ...


# --- helpers for the provider modules --------------------------------------------------------------


def json_object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names are case-insensitive: a plain mapping is read as a request's headers are."""
    return {name.lower(): value for name, value in headers.items()}


def integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def positive(value: Any) -> int | None:
    number = integer(value)
    return number if number is not None and number > 0 else None


def text(value: Any) -> str | None:
    """A non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def order_id_in(metadata: dict[str, Any]) -> uuid.UUID | None:
    """Our order's id in the metadata our checkout gave the provider."""
    try:
        return uuid.UUID(str(metadata.get("order_id")))
    except ValueError:
        return None


def subscriber_in(metadata: dict[str, Any]) -> Subscriber | None:
    """The subscriber named by the metadata our checkout gave a subscription: a user id and a plan."""
    plan_ref = metadata.get("plan_id")
    try:
        user_id = uuid.UUID(str(metadata.get("user_id")))
    except ValueError:
        return None
    return Subscriber(user_id, str(plan_ref)) if plan_ref else None
