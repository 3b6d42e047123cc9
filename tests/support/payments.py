"""Buying and paying through the fake providers over HTTP, and delivering their signed webhooks: shared by
the billing, dispute, refund and delivery-order tests.

The providers are the fakes in tests/fakes (conftest's `fake_stripe`, `fake_razorpay`, `fake_dodo`);
`payment_settings` points every gateway at them. Amounts of credits are millicredits (1 credit = 1000);
every new account starts with the signup bonus (10 credits).

`PaymentFlow` drives one payment of one provider the same way for all three: `buy` creates our order over
HTTP and pays it at the provider (nothing is delivered yet), then `confirmations`, `refund` and `dispute`
build the provider's events in the order things happen at the provider, as `Step`s that tests deliver in
any order, again under the same event id (a redelivery) or under a new one (the same news re-sent).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.models import CreditAccount, CreditDebt, CreditLedgerEntry, LedgerReason, Order, Plan, WebhookEvent
from app.services import credits
from tests.conftest import make_settings
from tests.fakes.dodo import FakeDodo
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe

PLANS = "/api/v1/plans"
CREATE_ORDER = "/api/v1/orders/create-order"
VERIFY_ORDER = "/api/v1/orders/verify-order"
CHECKOUT = "/api/v1/payment/create-checkout"
SUBSCRIBE = "/api/v1/payment/subscribe"
ORDERS = "/api/v1/payment/orders"
USER_CREDITS = "/api/v1/users/credits"
TRANSACTIONS = "/api/v1/credits/transactions"
STRIPE_WEBHOOK = "/api/v1/webhooks/stripe"
RAZORPAY_WEBHOOK = "/api/v1/webhooks/razorpay"
DODO_WEBHOOK = "/api/v1/webhooks/dodo"
WEBHOOKS = {"stripe": STRIPE_WEBHOOK, "razorpay": RAZORPAY_WEBHOOK, "dodo": DODO_WEBHOOK}

BONUS = 10_000  # the signup bonus, 10 credits
BASIC, PREMIUM, ULTIMATE, PRO = 100_000, 300_000, 1_000_000, 500_000  # credits per pack / per month
BASIC_USD, BASIC_INR, PRO_USD = 599, 49_900, 999  # prices in cents / paise
DODO_CREDITS_PRODUCT = "pdt_custom_credits"
DODO_CENTS_PER_CREDIT = 5  # the settings' default price of a custom Dodo credit


def payment_settings(
    database_url: str,
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
    **overrides: object,
) -> Settings:
    """Settings with every payment gateway pointed at its fake (no SDK retries)."""
    values: dict[str, object] = {
        "database_url": database_url,
        "stripe_api_base": fake_stripe.api_base,
        "stripe_secret_key": fake_stripe.secret_key,
        "stripe_webhook_secret": fake_stripe.webhook_secret,
        "razorpay_base_url": fake_razorpay.base_url,
        "razorpay_key_id": fake_razorpay.key_id,
        "razorpay_key_secret": fake_razorpay.key_secret,
        "razorpay_webhook_secret": fake_razorpay.webhook_secret,
        "dodo_base_url": fake_dodo.base_url,
        "dodo_api_key": fake_dodo.api_key,
        "dodo_webhook_secret": fake_dodo.webhook_secret,
        "dodo_credits_product_id": DODO_CREDITS_PRODUCT,
        "payment_api_max_retries": 0,
    }
    values.update(overrides)
    return make_settings(**values)


# --- what a client sees ----------------------------------------------------------------------------


def millicredits(value: Any) -> int:
    return int(Decimal(str(value)) * 1000)


async def balance(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    """The spendable balance in millicredits, as the API reports it."""
    response = await client.get(USER_CREDITS, headers=headers)
    assert response.status_code == 200, response.text
    return millicredits(response.json()["credits"])


async def plan_of(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await client.get(USER_CREDITS, headers=headers)
    assert response.status_code == 200, response.text
    plan: str = response.json()["plan"]
    return plan


async def order_of(client: httpx.AsyncClient, headers: dict[str, str], order_id: str) -> dict[str, Any]:
    """The order as `GET payment/orders` shows it to its owner."""
    response = await client.get(ORDERS, headers=headers)
    assert response.status_code == 200, response.text
    [order] = [order for order in response.json() if order["id"] == order_id]
    found: dict[str, Any] = order
    return found


async def movements(client: httpx.AsyncClient, headers: dict[str, str]) -> list[tuple[str, int]]:
    """Every ledger movement of the account as `GET credits/transactions` shows it: (reason, amount),
    sorted."""
    response = await client.get(TRANSACTIONS, params={"limit": 100}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    return sorted((item["reason"], millicredits(item["amount"])) for item in body["items"])


# --- the database, for what no endpoint shows ------------------------------------------------------


async def order_row(session: AsyncSession, order_id: uuid.UUID | str) -> Order:
    session.expunge_all()
    order = await session.get(Order, uuid.UUID(str(order_id)))
    assert order is not None
    return order


async def ledger_of(
    session: AsyncSession, user_id: uuid.UUID, reason: LedgerReason | None = None
) -> list[CreditLedgerEntry]:
    """The user's ledger rows (oldest first), after checking the cached balance against them."""
    session.expunge_all()
    account = await session.scalar(select(CreditAccount).where(CreditAccount.user_id == user_id))
    assert account is not None
    rows = list(
        await session.scalars(
            select(CreditLedgerEntry)
            .where(CreditLedgerEntry.account_id == account.id)
            .order_by(CreditLedgerEntry.created_at)
        )
    )
    assert account.balance == sum(row.amount for row in rows) >= 0
    return [row for row in rows if reason is None or row.reason == reason.value]


async def stored_balance(session: AsyncSession, user_id: uuid.UUID) -> int:
    session.expunge_all()
    account = await session.scalar(select(CreditAccount).where(CreditAccount.user_id == user_id))
    assert account is not None
    return int(account.balance)


async def webhook_rows(
    session: AsyncSession, provider: str, event_id: str | None = None
) -> list[WebhookEvent]:
    session.expunge_all()
    statement = select(WebhookEvent).where(WebhookEvent.provider == provider)
    if event_id is not None:
        statement = statement.where(WebhookEvent.event_id == event_id)
    return list(await session.scalars(statement))


async def debts_of(session: AsyncSession, user_id: uuid.UUID) -> list[CreditDebt]:
    session.expunge_all()
    statement = select(CreditDebt).where(CreditDebt.user_id == user_id).order_by(CreditDebt.created_at)
    return list(await session.scalars(statement))


async def ledger_entry(session: AsyncSession, key: str) -> CreditLedgerEntry | None:
    """The ledger row written under this idempotency key."""
    session.expunge_all()
    return await session.scalar(select(CreditLedgerEntry).where(CreditLedgerEntry.idempotency_key == key))


def amounts(rows: list[CreditLedgerEntry]) -> list[int]:
    return [row.amount for row in rows]


async def spend(session: AsyncSession, user_id: uuid.UUID, amount: int) -> None:
    """Spend credits the way a job does: reserve, then capture."""
    key = f"job:{uuid.uuid4().hex}"
    await credits.reserve(session, user_id, amount, key)
    await credits.capture(session, key)
    await session.flush()


async def set_dodo_product(session: AsyncSession, code: str, product_id: str | None) -> None:
    await session.execute(update(Plan).where(Plan.code == code).values(dodo_product_id=product_id))
    await session.flush()


# --- buying ----------------------------------------------------------------------------------------


async def post_webhook(
    client: httpx.AsyncClient, path: str, delivery: tuple[bytes, dict[str, str]]
) -> httpx.Response:
    body, headers = delivery
    return await client.post(path, content=body, headers=headers)


async def send_webhook(
    client: httpx.AsyncClient, path: str, delivery: tuple[bytes, dict[str, str]], expected: str = "processed"
) -> None:
    """Deliver a signed webhook; it must be answered 200 with the status `expected`."""
    response = await post_webhook(client, path, delivery)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": expected}, response.text


async def send_stripe(
    client: httpx.AsyncClient, fake: FakeStripe, event: dict[str, Any], expected: str = "processed"
) -> None:
    await send_webhook(client, STRIPE_WEBHOOK, fake.deliver(event), expected)


def resent(fake: FakeStripe, event: dict[str, Any]) -> dict[str, Any]:
    """The same Stripe event content under a new event id (e.g. re-sent from the dashboard)."""
    return fake.event(event["type"], event["data"]["object"])


async def razorpay_order(
    client: httpx.AsyncClient, auth: dict[str, str], plan: str = "basic"
) -> dict[str, Any]:
    response = await client.post(CREATE_ORDER, json={"plan_id": plan}, headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def stripe_checkout(
    client: httpx.AsyncClient, auth: dict[str, str], plan: str = "basic", currency: str = "USD"
) -> dict[str, Any]:
    response = await client.post(
        CHECKOUT, json={"plan_id": plan, "provider": "stripe", "currency": currency}, headers=auth
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def stripe_subscription(
    client: httpx.AsyncClient, auth: dict[str, str], fake: FakeStripe
) -> tuple[dict[str, Any], str]:
    """Subscribe to Pro and complete the checkout: (the subscribe response, the Stripe subscription id)."""
    response = await client.post(SUBSCRIBE, json={"plan_id": "pro"}, headers=auth)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    completed = fake.checkout_completed(created["session_id"])
    answer = await post_webhook(client, STRIPE_WEBHOOK, fake.deliver(completed))
    assert answer.json() == {"status": "processed"}, answer.text
    return created, str(completed["data"]["object"]["subscription"])


async def dodo_checkout(
    client: httpx.AsyncClient, auth: dict[str, str], credits_wanted: int = 100
) -> dict[str, Any]:
    response = await client.post(CHECKOUT, json={"provider": "dodo", "credits": credits_wanted}, headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- one payment, any delivery order ---------------------------------------------------------------

Send = Callable[[httpx.AsyncClient, bool], Awaitable[httpx.Response]]
Outcome = Literal["open", "won", "lost"]


@dataclass
class Step:
    """One thing the provider tells us (or the client's own verification): `send(client, again)` delivers
    it; `again=True` sends the same news under a new event id, as a provider re-sending it does (a plain
    second `send` is a redelivery of the same event id). `sent` lists the (provider, event id) of every
    delivery made, for tests that clean up committed inbox rows."""

    label: str
    send: Send
    sent: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Purchase:
    """A pack bought over HTTP and paid at the provider; nothing delivered yet."""

    provider: str
    auth: dict[str, str]
    order_id: str
    payment_id: str
    amount: int  # minor units
    credits: int  # millicredits
    confirmation: list[dict[str, Any]] = field(default_factory=list)  # the provider's events
    refunded: int = 0  # what the provider refunded so far (built refunds)
    extra: dict[str, Any] = field(default_factory=dict)


class PaymentFlow:
    """One provider's payment, refunds and disputes as signed webhooks (see the module docstring)."""

    provider: str

    async def buy(self, client: httpx.AsyncClient, auth: dict[str, str]) -> Purchase:
        raise NotImplementedError

    def confirmations(self, purchase: Purchase) -> list[Step]:
        """Every event (and client call) that confirms the payment; any one of them pays the order."""
        raise NotImplementedError

    def paid_delivery(self, purchase: Purchase) -> tuple[bytes, dict[str, str]]:
        """The signed delivery (body, headers) of the payment's first confirmation event."""
        raise NotImplementedError

    def refund(self, purchase: Purchase, amount: int) -> Step:
        """The provider refunds `amount` more of the payment (build refunds in the order they happen)."""
        raise NotImplementedError

    def dispute(self, purchase: Purchase, outcome: Outcome) -> list[Step]:
        """A chargeback of the whole payment: its opening, then its decision unless `outcome` is open."""
        raise NotImplementedError


_EVENT_ID_HEADERS = {RAZORPAY_WEBHOOK: "x-razorpay-event-id", DODO_WEBHOOK: "webhook-id"}


def _step(label: str, path: str, deliver: Callable[[bool], tuple[bytes, dict[str, str]]]) -> Step:
    provider = next(name for name, webhook in WEBHOOKS.items() if webhook == path)

    async def send(client: httpx.AsyncClient, again: bool) -> httpx.Response:
        body, headers = deliver(again)
        header = _EVENT_ID_HEADERS.get(path)
        step.sent.append((provider, headers[header] if header else str(json.loads(body)["id"])))
        return await post_webhook(client, path, (body, headers))

    step = Step(label, send)
    return step


class StripeFlow(PaymentFlow):
    provider = "stripe"

    def __init__(self, fake: FakeStripe) -> None:
        self.fake = fake

    def _event(self, label: str, event: dict[str, Any]) -> Step:
        def deliver(again: bool) -> tuple[bytes, dict[str, str]]:
            sent = self.fake.event(event["type"], event["data"]["object"]) if again else event
            return self.fake.deliver(sent)

        return _step(label, STRIPE_WEBHOOK, deliver)

    async def buy(self, client: httpx.AsyncClient, auth: dict[str, str]) -> Purchase:
        created = await stripe_checkout(client, auth)
        completed = self.fake.checkout_completed(created["session_id"])  # paid at Stripe
        payment_intent = str(completed["data"]["object"]["payment_intent"])
        return Purchase("stripe", auth, created["order_id"], payment_intent, BASIC_USD, BASIC, [completed])

    def confirmations(self, purchase: Purchase) -> list[Step]:
        return [self._event("checkout.session.completed", purchase.confirmation[0])]

    def paid_delivery(self, purchase: Purchase) -> tuple[bytes, dict[str, str]]:
        return self.fake.deliver(purchase.confirmation[0])

    def refund(self, purchase: Purchase, amount: int) -> Step:
        before, purchase.refunded = purchase.refunded, purchase.refunded + amount
        event = self.fake.charge_refunded(
            purchase.payment_id, purchase.amount, purchase.refunded, previously_refunded=before
        )
        return self._event(f"charge.refunded:{purchase.refunded}", event)

    def dispute(self, purchase: Purchase, outcome: Outcome) -> list[Step]:
        dispute = self.fake.dispute(purchase.payment_id, purchase.amount)
        steps = [
            self._event("dispute.created", self.fake.dispute_event("charge.dispute.created", dispute["id"]))
        ]
        if outcome != "open":
            closed = self.fake.dispute_event("charge.dispute.closed", dispute["id"], status=outcome)
            steps.append(self._event(f"dispute.{outcome}", closed))
        return steps


class RazorpayFlow(PaymentFlow):
    provider = "razorpay"

    def __init__(self, fake: FakeRazorpay) -> None:
        self.fake = fake

    def _event(self, label: str, event: dict[str, Any]) -> Step:
        event_id = uuid.uuid4().hex[:14]

        def deliver(again: bool) -> tuple[bytes, dict[str, str]]:
            return self.fake.deliver(event, event_id=None if again else event_id)

        return _step(label, RAZORPAY_WEBHOOK, deliver)

    async def buy(self, client: httpx.AsyncClient, auth: dict[str, str]) -> Purchase:
        created = await razorpay_order(client, auth)
        checkout = self.fake.pay(created["razorpay_order_id"])  # paid at Razorpay
        purchase = Purchase(
            "razorpay", auth, created["order_id"], checkout["razorpay_payment_id"], BASIC_INR, BASIC
        )
        order_id, payment_id = created["razorpay_order_id"], checkout["razorpay_payment_id"]
        purchase.confirmation = [
            self.fake.payment_captured_event(order_id, payment_id),
            self.fake.order_paid_event(order_id, payment_id),
        ]
        purchase.extra["checkout"] = checkout
        return purchase

    def confirmations(self, purchase: Purchase) -> list[Step]:
        captured, paid = purchase.confirmation

        async def verify(client: httpx.AsyncClient, _again: bool) -> httpx.Response:
            return await client.post(VERIFY_ORDER, json=purchase.extra["checkout"], headers=purchase.auth)

        return [
            self._event("payment.captured", captured),
            self._event("order.paid", paid),
            Step("verify-order", verify),
        ]

    def paid_delivery(self, purchase: Purchase) -> tuple[bytes, dict[str, str]]:
        return self.fake.deliver(purchase.confirmation[0])

    def refund(self, purchase: Purchase, amount: int) -> Step:
        purchase.refunded += amount
        event = self.fake.refund_processed_event(purchase.payment_id, amount)
        return self._event(f"refund.processed:{amount}", event)

    def dispute(self, purchase: Purchase, outcome: Outcome) -> list[Step]:
        created = self.fake.dispute_event("created", purchase.payment_id)
        steps = [self._event("dispute.created", created)]
        if outcome != "open":
            dispute_id = created["payload"]["dispute"]["entity"]["id"]
            decided = self.fake.dispute_event(outcome, purchase.payment_id, dispute_id=dispute_id)
            steps.append(self._event(f"dispute.{outcome}", decided))
        return steps


class DodoFlow(PaymentFlow):
    provider = "dodo"
    credits_wanted = 200

    def __init__(self, fake: FakeDodo) -> None:
        self.fake = fake

    def _event(self, label: str, event: dict[str, Any]) -> Step:
        message_id = f"msg_{uuid.uuid4().hex}"

        def deliver(again: bool) -> tuple[bytes, dict[str, str]]:
            return self.fake.deliver(event, msg_id=None if again else message_id)

        return _step(label, DODO_WEBHOOK, deliver)

    async def buy(self, client: httpx.AsyncClient, auth: dict[str, str]) -> Purchase:
        created = await dodo_checkout(client, auth, self.credits_wanted)
        amount = self.credits_wanted * DODO_CENTS_PER_CREDIT
        paid = self.fake.payment_succeeded(created["session_id"], total_amount=amount, currency="USD")
        payment_id = str(paid["data"]["payment_id"])
        return Purchase(
            "dodo", auth, created["order_id"], payment_id, amount, self.credits_wanted * 1000, [paid]
        )

    def confirmations(self, purchase: Purchase) -> list[Step]:
        return [self._event("payment.succeeded", purchase.confirmation[0])]

    def paid_delivery(self, purchase: Purchase) -> tuple[bytes, dict[str, str]]:
        return self.fake.deliver(purchase.confirmation[0])

    def refund(self, purchase: Purchase, amount: int) -> Step:
        purchase.refunded += amount
        partial = purchase.refunded < purchase.amount
        event = self.fake.refund_succeeded(purchase.payment_id, amount, "USD", is_partial=partial)
        return self._event(f"refund.succeeded:{amount}", event)

    def dispute(self, purchase: Purchase, outcome: Outcome) -> list[Step]:
        amount = str(purchase.amount)
        opened = self.fake.dispute_event("opened", purchase.payment_id, amount, "USD")
        steps = [self._event("dispute.opened", opened)]
        if outcome != "open":
            dispute_id = opened["data"]["dispute_id"]
            decided = self.fake.dispute_event(
                outcome, purchase.payment_id, amount, "USD", dispute_id=dispute_id
            )
            steps.append(self._event(f"dispute.{outcome}", decided))
        return steps


def payment_flow(provider: str, stripe: FakeStripe, razorpay: FakeRazorpay, dodo: FakeDodo) -> PaymentFlow:
    flows: dict[str, PaymentFlow] = {
        "stripe": StripeFlow(stripe),
        "razorpay": RazorpayFlow(razorpay),
        "dodo": DodoFlow(dodo),
    }
    return flows[provider]


@dataclass(frozen=True)
class PaymentState:
    """What the customer sees of one purchase: balance, the order's status and refunded amount."""

    balance: int
    status: str
    refunded_amount: int


async def payment_state(client: httpx.AsyncClient, purchase: Purchase) -> PaymentState:
    order = await order_of(client, purchase.auth, purchase.order_id)
    return PaymentState(await balance(client, purchase.auth), order["status"], order["refunded_amount"])


def expected_state(purchase: Purchase, refunds: list[int], outcome: Outcome | None) -> PaymentState:
    """The rules (app/services/billing/adjustments.py): the money back with the customer is the refunds plus a
    chargeback that stands (open or lost); the credits taken back are its share of the pack."""
    returned = sum(refunds) + (purchase.amount if outcome in ("open", "lost") else 0)
    taken = purchase.credits * min(returned, purchase.amount) // purchase.amount
    status = "refunded" if returned >= purchase.amount else "paid"
    return PaymentState(BONUS + purchase.credits - taken, status, min(returned, purchase.amount))


async def deliver(client: httpx.AsyncClient, step: Step, *, again: bool = False) -> str:
    """Send one step; it must be accepted (200). The answer's status (or "verified" for the client's
    verification)."""
    response = await step.send(client, again)
    assert response.status_code == 200, (step.label, response.text)
    body = response.json()
    return str(body.get("status", "verified" if body.get("success") else body))
