"""The Hair Try-On SPA's image, upload and payment routes under /compat/hairtryon/api/v1, driven the way
its source (kevinnadar22/hairtryon, frontend/src/, cited as file:line) calls them: `credentials:
"include"` cookies from the native cookie login, an Origin on every write, the presigned POST without
any credential, the Dodo checkout and its webhook. Fakes: Replicate and Dodo Payments."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.models import Job, JobKind, JobStatus, Order, Style, Upload, User
from app.services import images, upload_policy
from tests.conftest import make_settings
from tests.factories import make_user
from tests.fakes.dodo import FakeDodo
from tests.fakes.replicate import FakeReplicate
from tests.support.accounts import PASSWORD, code_in, last_email_to
from tests.support.http import assert_error
from tests.support.images import photo_like
from tests.support.payments import DODO_WEBHOOK, send_webhook

API = "https://api.example.com"
APP = "https://tryon.example.com"
FOREIGN = "https://evil.example.net"
FRONTEND = "https://tryon.example.com"
HT = "/compat/hairtryon/api/v1"
ORIGIN = {"Origin": APP}
MAX_BYTES = 64 * 1024
CREDITS_PRODUCT = "pdt_hairtryon_credits"


@pytest.fixture
def settings(
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    fake_replicate: FakeReplicate,
    fake_dodo: FakeDodo,
) -> Settings:
    # The README's Hair Try-On settings (§4 of the seed-clients reference): INR, 1 rupee a credit.
    return make_settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        public_base_url=API,
        frontend_url=FRONTEND,
        cors_origins=[APP],
        upload_max_bytes=MAX_BYTES,
        replicate_api_token=fake_replicate.api_token,
        replicate_webhook_secret=fake_replicate.webhook_secret,
        replicate_poll_interval_seconds=0.01,
        job_retry_base_seconds=0,
        dodo_base_url=fake_dodo.base_url,
        dodo_api_key=fake_dodo.api_key,
        dodo_webhook_secret=fake_dodo.webhook_secret,
        dodo_credits_product_id=CREDITS_PRODUCT,
        dodo_currency="INR",
        dodo_price_per_credit_cents=100,
        dodo_min_custom_credits=1,
        payment_api_max_retries=0,
    )


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The SPA's fetches: over https (the session cookies are Secure there), keeping cookies."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as client:
        yield client


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A browser request that carries no cookie (the S3-style upload, an <img> of a file link)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as client:
        yield client


async def cookie_sign_in(client: httpx.AsyncClient, session: AsyncSession, email: str) -> User:
    """The SPA's own way in: sign up with an emailed code (Signup.tsx, VerifySignup), sign out, then sign
    in with a password and an emailed code (Login.tsx:73-83, VerifyLogin.tsx); the session cookies land in
    the jar."""

    async def spa_post(path: str, body: dict[str, str]) -> httpx.Response:
        response = await client.post(f"{HT}{path}", json=body, headers=ORIGIN)
        assert response.status_code == 200, response.text
        return response

    signup = await spa_post("/auth/signup", {"email": email, "name": "Ana", "password": PASSWORD})
    code = code_in(await last_email_to(session, email, "signup_code"))
    await spa_post("/auth/verify-signup", {"token": signup.json()["verify_token"], "code": code})
    await spa_post("/auth/logout", {})
    assert not client.cookies.get("access_token")
    login = await spa_post("/auth/request-login-token", {"email": email, "password": PASSWORD})
    code = code_in(await last_email_to(session, email, "login_code"))
    await spa_post("/auth/verify-login", {"token": login.json()["token"], "code": code})
    assert {"access_token", "refresh_token"} <= set(client.cookies.keys())
    user = await session.scalar(select(User).where(User.email == email))
    assert user is not None
    return user


def s3_error(response: httpx.Response) -> dict[str, str]:
    """The <Error> document, as lib/uploadS3.ts:4-31 parses it."""
    assert response.headers["content-type"].startswith("application/xml"), response.text
    root = ElementTree.fromstring(response.content)
    assert root.tag == "Error"
    return {child.tag: child.text or "" for child in root}


async def balance(client: httpx.AsyncClient) -> Decimal:
    """The balance in credits, as the native API reports it to the signed-in cookie session."""
    response = await client.get("/api/v1/users/credits")
    assert response.status_code == 200, response.text
    return Decimal(str(response.json()["credits"]))


async def presign(client: httpx.AsyncClient) -> dict[str, Any]:
    # components/UploadPhoto/GenerateButton.tsx:81-83, 166-170: file_name and file_type of the picked file.
    response = await client.get(
        f"{HT}/files/presign", params={"file_name": "me.png", "file_type": "image/png"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def post_to_s3(client: httpx.AsyncClient, presigned: dict[str, Any], data: bytes) -> httpx.Response:
    # lib/uploadS3.ts:40-53: every policy field, then `file`, in one FormData; fetch without credentials.
    return await client.post(
        presigned["upload_url"],
        data=presigned["fields"],
        files={"file": ("me.png", data, "image/png")},
        headers=ORIGIN,
    )


async def add_finished_try_ons(session: AsyncSession, user: User, count: int) -> None:
    """Older try-ons of `user`, finished (their stored files are not needed to list them)."""
    long_ago = utcnow() - timedelta(days=1)
    for index in range(count):
        job_id = uuid.uuid4()
        key = f"users/{user.id}/jobs/{job_id}/front.png"
        session.add(
            Job(
                id=job_id,
                user_id=user.id,
                kind=JobKind.generate.value,
                status=JobStatus.completed.value,
                options={"style_id": str(uuid.uuid4()), "prompt": "a bob", "views": ["front"]},
                outputs=[{"key": key, "content_type": "image/png", "view": "front"}],
                created_at=long_ago - timedelta(minutes=index),
            )
        )
    await session.flush()


async def test_styles_carry_the_tab_they_belong_to(client: httpx.AsyncClient, session: AsyncSession) -> None:
    session.add(
        Style(name="Celebrity Quiff", prompt="a quiff", category="celebrity", thumbnail_url=f"{API}/q.png")
    )
    await session.flush()

    # components/Styles/Styles.tsx:46-48: tabs by `category`, pictures by `image_url`, signed in or not.
    response = await client.get(f"{HT}/image/styles")

    assert response.status_code == 200, response.text
    styles = response.json()
    assert {style["category"] for style in styles} == {"standard", "celebrity"}
    quiff = next(style for style in styles if style["name"] == "Celebrity Quiff")
    assert quiff == {
        "id": quiff["id"],
        "name": "Celebrity Quiff",
        "category": "celebrity",
        "image_url": f"{API}/q.png",
    }
    assert all(isinstance(style["image_url"], str) for style in styles)


async def test_a_photo_goes_from_presign_to_side_views_to_history_and_credits_are_bought(
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    session: AsyncSession,
    fake_replicate: FakeReplicate,
    fake_dodo: FakeDodo,
) -> None:
    user = await cookie_sign_in(client, session, "tryon@example.com")
    style = (await client.get(f"{HT}/image/styles")).json()[0]

    # Presign, then the S3-style POST with no credentials (lib/uploadS3.ts:47-53 needs `res.ok`).
    presigned = await presign(client)
    assert presigned["upload_url"] == f"{API}{HT}/files/upload"
    assert presigned["key"] == presigned["fields"]["key"]
    photo = photo_like(96, 96)
    uploaded = await post_to_s3(anonymous, presigned, photo)
    assert uploaded.status_code == 204, uploaded.text
    assert uploaded.headers["access-control-allow-origin"] == APP  # the browser lets the SPA read it
    again = await post_to_s3(anonymous, presigned, photo)
    assert (again.status_code, s3_error(again)["Code"]) == (409, "InvalidArgument")

    # The file_url is the photo (an <img> without cookies), and "previous photos" lists it.
    file_url = presigned["file_url"]
    shown = await anonymous.get(file_url)
    assert shown.status_code == 302
    assert (await anonymous.get(shown.headers["location"])).content == photo
    assert (await client.get(f"{HT}/user/uploads")).json() == [file_url]

    # GenerateButton.tsx:187-189 sends the file_url back with the style's id; polls status (:94-116).
    generated = await client.post(
        f"{HT}/image/generate", json={"image_input_url": file_url, "style_id": style["id"]}, headers=ORIGIN
    )
    assert generated.status_code == 200, generated.text
    image_id = generated.json()["image_id"]
    status = (await client.get(f"{HT}/image/status/{image_id}")).json()
    assert status["status"] == "completed"
    assert status["output_image_url"].startswith(f"{API}/api/v1/files/")
    assert (status["right_view_url"], status["left_view_url"], status["back_view_url"]) == (None, None, None)
    job = await session.get_one(Job, uuid.UUID(image_id))
    assert job.input_upload_id == uuid.UUID(presigned["fields"]["key"].rsplit("/", 1)[1])

    # SideGenerateButton (GenerateButton.tsx:226-253): view-generate, then poll that id to 3 URLs.
    views = await client.post(f"{HT}/image/view-generate", json={"image_id": image_id}, headers=ORIGIN)
    assert views.status_code == 200, views.text
    side_id = views.json()["image_id"]
    side = (await client.get(f"{HT}/image/status/{side_id}")).json()
    assert side["status"] == "completed"
    assert all(side[f"{view}_view_url"] for view in ("right", "left", "back"))
    # Made from the try-on's front OUTPUT, not the uploaded photo (seed-clients §6).
    sent = fake_replicate.created[-3:]
    assert [urlsplit(p["input"]["image_input"][0]).path for p in sent] == [
        f"/api/v1/files/users/{user.id}/jobs/{image_id}/front.png"
    ] * 3
    parent = (await client.get(f"{HT}/image/status/{image_id}")).json()
    assert all(parent[f"{view}_view_url"] for view in ("right", "left", "back"))
    assert await balance(client) == 6  # 10 bonus - 1 front view - 3 side views

    # FrontView.tsx:27-29, 53-59: like with no body.
    liked = await client.post(f"{HT}/image/like/{image_id}", headers=ORIGIN)
    assert liked.status_code == 200, liked.text

    # HistoryPage.tsx:28-39: page 1, then `next_page` echoed as `page`; favourites=false is everything.
    await add_finished_try_ons(session, user, 10)
    first = (await client.get(f"{HT}/user/images", params={"page": 1, "favourites": "false"})).json()
    assert (first["page"], first["limit"], first["total_images"]) == (
        1,
        10,
        11,
    )  # the side-view job is nested
    newest = first["images"][0]
    assert newest["id"] == image_id
    assert (newest["status"], newest["style_name"], newest["input_image_url"]) == (
        "completed",
        style["name"],
        file_url,
    )
    assert set(newest["side_views"]) == {"right_view_url", "left_view_url", "back_view_url"}
    assert first["next_page"]
    second = (
        await client.get(f"{HT}/user/images", params={"page": first["next_page"], "favourites": "false"})
    ).json()
    assert (len(second["images"]), second["next_page"], second["total_images"]) == (1, None, 11)
    assert {item["id"] for item in first["images"]}.isdisjoint(item["id"] for item in second["images"])
    favourites = (await client.get(f"{HT}/user/images", params={"page": 1, "favourites": "true"})).json()
    assert ([item["id"] for item in favourites["images"]], favourites["total_images"]) == ([image_id], 1)

    # CreditPurchaseModal.tsx:36-41, 60: {quantity} -> checkout_url; Dodo returns to FRONTEND_URL/payment.
    bought = await client.post(f"{HT}/payments/checkout", json={"quantity": 5}, headers=ORIGIN)
    assert bought.status_code == 200, bought.text
    session_id = bought.json()["session_id"]
    assert bought.json()["checkout_url"].endswith(session_id)
    sent_checkout = fake_dodo.checkouts[session_id]
    assert sent_checkout["return_url"] == f"{FRONTEND}/payment"
    assert sent_checkout["product_cart"] == [{"product_id": CREDITS_PRODUCT, "quantity": 1, "amount": 500}]

    paid = fake_dodo.payment_succeeded(session_id, total_amount=500, currency="INR")
    payment_id = paid["data"]["payment_id"]
    # PaymentCallback.tsx:18-49: before the webhook the payment is unknown (the SPA retries twice).
    assert_error(await client.get(f"{HT}/payments/transaction/{payment_id}"), 404, "not_found")
    await send_webhook(client, DODO_WEBHOOK, fake_dodo.deliver(paid))
    found = (await client.get(f"{HT}/payments/transaction/{payment_id}")).json()
    assert (found["status"], found["quantity"]) == ("succeeded", 5)
    assert await balance(client) == 11

    # Profile.tsx:113-118: paid purchases only, amount in rupees.
    await client.post(f"{HT}/payments/checkout", json={"quantity": 2}, headers=ORIGIN)  # never paid
    listed = (await client.get(f"{HT}/payments/transactions")).json()
    assert [(item["quantity"], item["amount"], item["status"]) for item in listed] == [(5, 5.0, "succeeded")]
    assert set(listed[0]) >= {"id", "created_at", "quantity", "status", "amount"}


def _tampered(fields: dict[str, str]) -> dict[str, str]:
    signature = fields["signature"]
    return {**fields, "signature": ("0" if signature[0] != "0" else "1") + signature[1:]}


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("expired", 403, "AccessDenied"),
        ("tampered", 403, "AccessDenied"),
        ("too large", 400, "EntityTooLarge"),
        ("not an image", 415, "InvalidArgument"),
    ],
)
async def test_a_refused_upload_is_told_as_s3_does_and_stores_nothing(
    anonymous: httpx.AsyncClient,
    container: Container,
    user: User,
    session: AsyncSession,
    case: str,
    status: int,
    code: str,
) -> None:
    now = time.time() - upload_policy.POLICY_TTL_SECONDS - 1 if case == "expired" else None
    signed = upload_policy.issue(container, user.id, now=now)
    fields = {"key": signed.policy.key, "policy": signed.encoded, "signature": signed.signature}
    data = photo_like(96, 96)
    if case == "tampered":
        fields = _tampered(fields)
    elif case == "too large":
        data = b"\x89PNG" + b"\0" * MAX_BYTES
    elif case == "not an image":
        data = b"%PDF-1.7 not a photo"
    presigned = {"upload_url": f"{API}{HT}/files/upload", "fields": fields}

    refused = await post_to_s3(anonymous, presigned, data)

    assert refused.status_code == status, refused.text
    error = s3_error(refused)
    assert error["Code"] == code
    assert error["Message"]
    if case == "too large":
        assert (error["ProposedSize"], error["MaxSizeAllowed"]) == (str(len(data)), str(MAX_BYTES))
    assert await session.scalar(select(func.count()).select_from(Upload)) == 0


async def test_another_users_image_photo_and_payment_are_not_found_and_nothing_changes(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    owner = await make_user(session, settings)
    await add_finished_try_ons(session, owner, 1)
    theirs = await session.scalar(select(Job).where(Job.user_id == owner.id))
    assert theirs is not None
    their_photo = Upload(
        user_id=owner.id,
        storage_key=f"users/{owner.id}/uploads/x.png",
        content_type="image/png",
        width=1,
        height=1,
        size=1,
        sha256="0" * 64,
    )
    session.add_all(
        [
            their_photo,
            Order(
                user_id=owner.id,
                provider="dodo",
                kind="credit_pack",
                credits=5000,
                amount=500,
                currency="INR",
                status="paid",
                provider_payment_id="pay_theirs",
            ),
        ]
    )
    await session.flush()
    await cookie_sign_in(client, session, "other@example.com")
    style = (await client.get(f"{HT}/image/styles")).json()[0]
    their_link = (
        f"{API}{HT}/files/{their_photo.id}?sig={upload_policy.file_signature(container, their_photo.id)}"
    )

    answers = [
        await client.get(f"{HT}/image/status/{theirs.id}"),
        await client.post(f"{HT}/image/like/{theirs.id}", headers=ORIGIN),
        await client.post(f"{HT}/image/view-generate", json={"image_id": str(theirs.id)}, headers=ORIGIN),
        await client.post(
            f"{HT}/image/generate",
            json={"image_input_url": their_link, "style_id": style["id"]},
            headers=ORIGIN,
        ),
        await client.get(f"{HT}/payments/transaction/pay_theirs"),
    ]

    for answer in answers:
        assert_error(answer, 404, "not_found")
    session.expunge_all()
    assert (await session.get_one(Job, theirs.id)).is_favourite is False
    assert await session.scalar(select(func.count()).select_from(Job)) == 1
    assert await balance(client) == 10
    assert (await client.get(f"{HT}/user/images")).json()["total_images"] == 0


async def test_a_write_from_a_foreign_origin_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, session: AsyncSession, fake_dodo: FakeDodo
) -> None:
    await cookie_sign_in(client, session, "csrf@example.com")

    refused = await client.post(f"{HT}/payments/checkout", json={"quantity": 5}, headers={"Origin": FOREIGN})

    assert_error(refused, 403, "csrf_failed")
    assert fake_dodo.checkouts == {}
    assert await session.scalar(select(func.count()).select_from(Order)) == 0


async def test_anonymous_visitors_are_told_to_sign_in_and_side_views_need_a_finished_try_on(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    # contexts/Auth/provider.tsx:46: no cookies at all is NO_COOKIES_FOUND, which shows no toast.
    anonymous = await client.get(
        f"{HT}/files/presign", params={"file_name": "a.png", "file_type": "image/png"}
    )
    assert (anonymous.status_code, anonymous.json()["detail"]["code"]) == (400, "NO_COOKIES_FOUND")

    user = await cookie_sign_in(client, session, "early@example.com")
    job = Job(user_id=user.id, kind=JobKind.generate.value, status=JobStatus.processing.value, options={})
    session.add(job)
    await session.flush()

    early = await client.post(f"{HT}/image/view-generate", json={"image_id": str(job.id)}, headers=ORIGIN)

    assert_error(early, 409, "image_not_finished")
    assert await session.scalar(select(func.count()).select_from(Job)) == 1
    assert await balance(client) == 10


async def test_side_views_outlive_their_deleted_try_on_and_an_erased_account_leaves_neither(
    client: httpx.AsyncClient, session: AsyncSession, user: User, auth: dict[str, str], container: Container
) -> None:
    await add_finished_try_ons(session, user, 1)
    parent = await session.scalar(select(Job).where(Job.user_id == user.id))
    assert parent is not None
    child = Job(
        user_id=user.id,
        kind=JobKind.generate.value,
        status=JobStatus.completed.value,
        parent_job_id=parent.id,
        input_key=parent.outputs[0]["key"],
    )
    other_child = Job(user_id=user.id, kind=JobKind.generate.value, parent_job_id=None)
    session.add_all([child, other_child])
    await session.flush()
    other_child.parent_job_id = child.id  # a chain, to erase in whatever order
    await session.flush()

    assert (await client.delete(f"/api/v1/images/{parent.id}", headers=auth)).status_code == 204

    session.expunge_all()
    assert (await session.get_one(Job, child.id)).parent_job_id is None  # listed on its own now
    await images.delete_user_files(session, container, user.id)
    assert await session.scalar(select(func.count()).select_from(Job).where(Job.user_id == user.id)) == 0
