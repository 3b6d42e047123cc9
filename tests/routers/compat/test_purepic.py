"""The Pure Pic React client against /compat/purepic/api/v1: each call sent exactly as the client sends
it and answered with exactly what it reads (shared/reference/seed-clients.md §2; the file:line cites are
the client's, from that reference), signed in with real Clerk session tokens from the fake Clerk and
paying through the fake Razorpay.

Every account starts with the signup bonus (10 credits); a cut-out costs 1; the Basic pack gives 100."""

from __future__ import annotations

import base64
import io
import uuid
from typing import Any

import httpx
import pytest
import respx
from PIL import Image
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.models import CreditAccount, Job, LedgerReason, Order, Upload, User
from tests.factories import bearer, make_user
from tests.fakes.clerk import FakeClerk
from tests.fakes.dodo import FakeDodo
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe
from tests.support.http import assert_error
from tests.support.images import pdf_named_png, photo_like
from tests.support.payments import ledger_of, order_row, payment_settings

API = "/compat/purepic/api/v1"  # the client's VITE_BACKEND_URL path (AppContext.jsx:10)
SYNC_USER = f"{API}/users/createupdateuser"
CREDITS = f"{API}/users/credits"
CUT_OUT = f"{API}/images/remove-background"
CREATE_ORDER = f"{API}/orders/create-order"
VERIFY_ORDER = f"{API}/orders/verify-order"


@pytest.fixture
def fake_clerk(outside_http: respx.MockRouter) -> FakeClerk:
    return FakeClerk(outside_http)


@pytest.fixture
def settings(
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    fake_clerk: FakeClerk,
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
) -> Settings:
    """Clerk checked in full (issuer, authorized party, expiry), Razorpay at its fake."""
    return payment_settings(
        database_url,
        fake_stripe,
        fake_razorpay,
        fake_dodo,
        clerk_issuer=fake_clerk.issuer,
        clerk_jwks_url=fake_clerk.jwks_url,
        clerk_authorized_parties=[fake_clerk.authorized_party],
        data_dir=tmp_path_factory.mktemp("data"),
    )


def new_clerk_id() -> str:
    return "user_" + uuid.uuid4().hex[:24]


def signed_in(fake_clerk: FakeClerk, clerk_id: str) -> dict[str, str]:
    """A fresh session token per call, as the client's `await getToken()` gives it."""
    return {"Authorization": f"Bearer {fake_clerk.session_token(clerk_id)}"}


def clerk_profile(clerk_id: str) -> dict[str, Any]:
    """UserSyncHandler.jsx:35-44: the body it builds from Clerk's `useUser()`."""
    return {
        "clerkId": clerk_id,
        "email": "ada@example.com",
        "username": None,
        "firstName": "Ada",
        "lastName": "Lovelace",
        "photoUrl": "https://img.clerk.com/ada",
    }


def picture(data: bytes) -> dict[str, tuple[str, bytes, str]]:
    """AppContext.jsx:56-60: FormData with the chosen file under `file`."""
    return {"file": ("photo.png", data, "image/png")}


async def credits_shown(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    """AppContext.jsx:23-33: the count the client shows, only read when `success` is true."""
    response = await client.get(CREDITS, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {"success": True, "data": {"credits": body["data"]["credits"]}, "statusCode": "OK"}
    credits: int = body["data"]["credits"]
    assert isinstance(credits, int)
    return credits


async def clerk_user(session: AsyncSession, clerk_id: str) -> User:
    session.expunge_all()
    user = await session.scalar(select(User).where(User.clerk_id == clerk_id))
    assert user is not None
    return user


async def test_sign_in_cut_out_and_buy_a_pack_as_the_client_does(
    client: httpx.AsyncClient, session: AsyncSession, fake_clerk: FakeClerk, fake_razorpay: FakeRazorpay
) -> None:
    clerk_id = new_clerk_id()

    def auth() -> dict[str, str]:
        return signed_in(fake_clerk, clerk_id)

    # Sign-in sync (UserSyncHandler.jsx:35-44): any 2xx loads the credits; `success` greets the user.
    synced = await client.post(SYNC_USER, json=clerk_profile(clerk_id), headers=auth())
    assert synced.status_code == 200, synced.text
    assert synced.json() == {
        "success": True,
        "data": {
            "clerkId": clerk_id,
            "email": None,  # the body's address is not proven by the token: not taken
            "username": None,
            "firstName": "Ada",
            "lastName": "Lovelace",
            "photoUrl": "https://img.clerk.com/ada",
            "credits": 10,
        },
        "statusCode": "OK",
    }
    user = await clerk_user(session, clerk_id)
    assert (user.name, user.photo_url, user.email, user.role) == (
        "Ada Lovelace",
        "https://img.clerk.com/ada",
        None,
        "user",
    )
    assert await credits_shown(client, auth()) == 10

    # Cut-out (AppContext.jsx:56-67): the body goes after `data:image/png;base64,` as is.
    cut_out = await client.post(CUT_OUT, files=picture(photo_like(64, 64)), headers=auth())
    assert cut_out.status_code == 200, cut_out.text
    assert cut_out.headers["content-type"].startswith("text/plain")
    with Image.open(io.BytesIO(base64.b64decode(cut_out.text, validate=True))) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (64, 64))
    assert await credits_shown(client, auth()) == 9

    # Buy the Basic pack (OrderService.js:9-14): `?planId=Basic`, body {}, needs 200 and `data.data`.
    created = await client.post(f"{CREATE_ORDER}?planId=Basic", json={}, headers=auth())
    assert created.status_code == 200, created.text
    assert created.json()["success"] is True
    order = created.json()["data"]
    at_razorpay = fake_razorpay.orders[order["id"]]
    ours = await order_row(session, uuid.UUID(hex=order["receipt"]))
    assert order == {
        "id": ours.provider_order_id,
        "entity": "order",
        "amount": 49_900,
        "currency": "INR",
        "receipt": at_razorpay["receipt"],
        "status": "created",
        "created_at": int(ours.created_at.timestamp()),
    }
    assert (at_razorpay["amount"], at_razorpay["currency"]) == (49_900, "INR")

    # Razorpay Checkout's handler result, posted as is (OrderService.js:39-48); a forged one first.
    checkout = fake_razorpay.pay(order["id"])
    forged = await client.post(
        VERIFY_ORDER, json={**checkout, "razorpay_signature": "0" * 64}, headers=auth()
    )
    assert_error(forged, 400, "invalid_signature")
    assert (await order_row(session, ours.id)).status == "created"
    assert await credits_shown(client, auth()) == 9

    verified = await client.post(VERIFY_ORDER, json=checkout, headers=auth())
    assert verified.status_code == 200, verified.text
    assert verified.json()["success"] is True
    assert await credits_shown(client, auth()) == 109

    replayed = await client.post(VERIFY_ORDER, json=checkout, headers=auth())
    assert replayed.status_code == 200, replayed.text
    assert await credits_shown(client, auth()) == 109
    purchases = await ledger_of(session, user.id, LedgerReason.purchase)
    assert [row.amount for row in purchases] == [100_000]


@pytest.mark.parametrize("caller", ["another-clerk-user", "local-token"])
async def test_sync_for_anyone_but_the_tokens_clerk_user_is_403_and_changes_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    container: Container,
    fake_clerk: FakeClerk,
    caller: str,
) -> None:
    victim = new_clerk_id()
    if caller == "local-token":
        headers = bearer(container, await make_user(session, settings))
    else:
        headers = signed_in(fake_clerk, new_clerk_id())

    response = await client.post(SYNC_USER, json=clerk_profile(victim), headers=headers)

    assert_error(response, 403, "forbidden")
    session.expunge_all()
    assert (
        await session.scalar(select(func.count()).select_from(User).where(User.name == "Ada Lovelace")) == 0
    )
    assert await session.scalar(select(func.count()).select_from(User).where(User.clerk_id == victim)) == 0


@pytest.mark.parametrize(
    ("credential", "error"),
    [
        pytest.param(None, "unauthenticated", id="no-token"),
        pytest.param({"expires_in": -60}, "invalid_token", id="expired"),
        pytest.param({"issuer": "https://other-app.clerk.accounts.dev"}, "invalid_token", id="other-issuer"),
        pytest.param({"azp": "https://evil.example"}, "invalid_token", id="other-authorized-party"),
    ],
)
async def test_every_call_without_a_good_clerk_token_is_401(
    client: httpx.AsyncClient,
    session: AsyncSession,
    fake_clerk: FakeClerk,
    fake_razorpay: FakeRazorpay,
    credential: dict[str, Any] | None,
    error: str,
) -> None:
    clerk_id = new_clerk_id()
    headers = (
        {}
        if credential is None
        else {"Authorization": f"Bearer {fake_clerk.session_token(clerk_id, **credential)}"}
    )
    razorpay_calls = len(fake_razorpay.requests)
    checkout = {"razorpay_order_id": "order_x", "razorpay_payment_id": "pay_x", "razorpay_signature": "00"}

    calls = [
        client.post(SYNC_USER, json=clerk_profile(clerk_id), headers=headers),
        client.get(CREDITS, headers=headers),
        client.post(CUT_OUT, files=picture(photo_like(32, 32)), headers=headers),
        client.post(f"{CREATE_ORDER}?planId=Basic", json={}, headers=headers),
        client.post(VERIFY_ORDER, json=checkout, headers=headers),
    ]
    for call in calls:
        assert_error(await call, 401, error)

    assert len(fake_razorpay.requests) == razorpay_calls
    assert await session.scalar(select(func.count()).select_from(User).where(User.clerk_id == clerk_id)) == 0


@pytest.mark.parametrize(
    ("data", "no_credits", "status", "error"),
    [
        pytest.param(photo_like(32, 32), True, 402, "insufficient_credits", id="no-credits"),
        pytest.param(pdf_named_png(), False, 415, "unsupported_image", id="not-an-image"),
    ],
)
async def test_a_refused_cut_out_creates_and_charges_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    fake_clerk: FakeClerk,
    data: bytes,
    no_credits: bool,
    status: int,
    error: str,
) -> None:
    clerk_id = new_clerk_id()
    before = await credits_shown(client, signed_in(fake_clerk, clerk_id))  # the first call makes the user
    user = await clerk_user(session, clerk_id)
    if no_credits:
        await session.execute(update(CreditAccount).where(CreditAccount.user_id == user.id).values(balance=0))
        before = 0

    response = await client.post(CUT_OUT, files=picture(data), headers=signed_in(fake_clerk, clerk_id))

    assert_error(response, status, error)
    assert await session.scalar(select(func.count()).select_from(Job).where(Job.user_id == user.id)) == 0
    assert (
        await session.scalar(select(func.count()).select_from(Upload).where(Upload.user_id == user.id)) == 0
    )
    assert await credits_shown(client, signed_in(fake_clerk, clerk_id)) == before


async def test_create_order_takes_the_clients_plan_names(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, fake_razorpay: FakeRazorpay
) -> None:
    """OrderService.js:9-14 sends the client's plan ids, capitalised (seed-clients.md §2)."""
    clerk_id = new_clerk_id()
    for plan_id, amount in [("Basic", 49_900), ("Premium", 89_900), ("Ultimate", 149_900)]:
        response = await client.post(
            f"{CREATE_ORDER}?planId={plan_id}", json={}, headers=signed_in(fake_clerk, clerk_id)
        )

        assert response.status_code == 200, response.text
        order = response.json()["data"]
        assert (order["amount"], order["currency"]) == (amount, "INR")
        assert fake_razorpay.orders[order["id"]]["amount"] == amount


@pytest.mark.parametrize(
    ("plan_id", "status", "error"),
    [
        pytest.param("Gold", 404, "not_found", id="unknown-plan"),
        pytest.param("Pro", 400, "plan_not_available", id="subscription-plan"),
    ],
)
async def test_create_order_for_a_plan_not_sold_as_a_pack_creates_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    fake_clerk: FakeClerk,
    fake_razorpay: FakeRazorpay,
    plan_id: str,
    status: int,
    error: str,
) -> None:
    clerk_id = new_clerk_id()
    razorpay_calls = len(fake_razorpay.requests)

    response = await client.post(
        f"{CREATE_ORDER}?planId={plan_id}", json={}, headers=signed_in(fake_clerk, clerk_id)
    )

    assert_error(response, status, error)
    assert len(fake_razorpay.requests) == razorpay_calls
    session.expunge_all()
    orders = select(func.count()).select_from(Order).join(User, User.id == Order.user_id)
    assert await session.scalar(orders.where(User.clerk_id == clerk_id)) == 0
