"""The Pure Pic React client's API (Clerk bearer tokens, `{success, data, statusCode}` envelopes).

Every call carries `Authorization: Bearer <Clerk session JWT>` and nothing else (seed-clients.md §2), so
the native bearer resolver serves it unchanged: a missing or bad token is 401 (the original answered
403; the client treats every error alike). Refusals keep Pixforge's error body."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse

from app.dependencies import REPLAYED, ContainerDep, CurrentUser, IdempotentDep, PrincipalDep, SessionDep
from app.errors import Forbidden
from app.models import MILLICREDITS_PER_CREDIT, JobKind
from app.routers.images import read_limited
from app.schemas.billing import VerifyOrderIn
from app.schemas.compat.purepic import (
    PurePicCreditsOut,
    PurePicEnvelope,
    PurePicOrderOut,
    PurePicUserIn,
    PurePicUserOut,
)
from app.schemas.errors import error_responses
from app.services import credits, job_submission
from app.services import users as users_service
from app.services.billing import checkout

router = APIRouter(prefix="/purepic/api/v1", tags=["compat: Pure Pic"])


def whole_credits(millicredits: int) -> int:
    """The balance in whole credits, rounded down: the client shows an integer and subtracts 1 per
    cut-out (AppContext.jsx:66), so a fraction left by another app's 0.2-credit job is not shown as
    spendable here."""
    return millicredits // MILLICREDITS_PER_CREDIT


@router.post(
    "/users/createupdateuser", response_model=PurePicEnvelope[PurePicUserOut], responses=error_responses(403)
)
async def create_update_user(
    body: PurePicUserIn, principal: PrincipalDep, session: SessionDep
) -> PurePicEnvelope[PurePicUserOut]:
    """The sign-in sync (UserSyncHandler.jsx:35-44). Verifying the Clerk token already created the
    account; this takes the display name and photo from the body, for the token's own Clerk user only."""
    if principal.via != "clerk":
        raise Forbidden("This endpoint takes a Clerk session token.")
    user = principal.user
    if body.clerk_id != user.clerk_id:
        raise Forbidden("clerkId is not the Clerk user this session token belongs to.")
    names = [part for part in (body.first_name, body.last_name) if part and part.strip()]
    changes: dict[str, str] = {}
    if names:
        changes["name"] = " ".join(part.strip() for part in names)
    if body.photo_url is not None:
        changes["photo_url"] = str(body.photo_url)
    if changes:
        user = await users_service.update_profile(session, user, changes)
    assert user.clerk_id is not None
    return PurePicEnvelope(
        data=PurePicUserOut(
            clerk_id=user.clerk_id,
            email=user.email,
            username=user.username,
            # The name is kept whole; its parts are the ones it was just made of, if the body had any.
            first_name=body.first_name if names else user.name,
            last_name=body.last_name if names else None,
            photo_url=user.photo_url,
            credits=whole_credits(await credits.balance_of(session, user.id)),
        )
    )


@router.get("/users/credits", response_model=PurePicEnvelope[PurePicCreditsOut])
async def user_credits(user: CurrentUser, session: SessionDep) -> PurePicEnvelope[PurePicCreditsOut]:
    """AppContext.jsx:23-33 reads `success` and `data.credits`."""
    balance = await credits.balance_of(session, user.id)
    return PurePicEnvelope(data=PurePicCreditsOut(credits=whole_credits(balance)))


@router.post(
    "/images/remove-background",
    response_class=PlainTextResponse,
    responses={
        **error_responses(402, 413, 415),
        200: {"content": {"text/plain": {}}, "description": "The PNG cut-out, Base64."},
    },
)
async def remove_background(
    container: ContainerDep, idempotent: IdempotentDep, file: Annotated[UploadFile, File()]
) -> PlainTextResponse:
    """The native synchronous cut-out (same validation, engine and price; 402 without credits),
    answered as the bare Base64 the client puts after `data:image/png;base64,` (AppContext.jsx:56-67)."""
    data = await read_limited(file, container.settings.upload_max_bytes)
    answer = await idempotent.finish_job(
        job_submission.request(JobKind.remove_background, data, None, {}), {"file": data}
    )
    return PlainTextResponse(
        base64.b64encode(answer.finished.outputs[0].data).decode(),
        headers=REPLAYED if answer.replayed else None,
    )


@router.post(
    "/orders/create-order",
    response_model=PurePicEnvelope[PurePicOrderOut],
    responses=error_responses(404, 503),
)
async def create_order(
    plan_id: Annotated[str, Query(alias="planId", min_length=1, max_length=64)],
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    """`?planId=Basic|Premium|Ultimate` with an empty JSON body (OrderService.js:9-14): the plan code
    is the id lowercased. The client needs HTTP 200 and `data.{id, amount, currency, receipt}`."""

    async def produce() -> PurePicEnvelope[PurePicOrderOut]:
        created = await checkout.create_razorpay_order(session, container, user, plan_id.lower())
        order = created.order
        assert order.provider_order_id is not None
        return PurePicEnvelope(
            data=PurePicOrderOut(
                id=order.provider_order_id,
                amount=order.amount,
                currency=order.currency,
                receipt=order.id.hex,
                created_at=int(order.created_at.timestamp()),
            )
        )

    return await idempotent.respond(200, produce)


@router.post(
    "/orders/verify-order",
    response_model=PurePicEnvelope[PurePicCreditsOut],
    responses=error_responses(400, 503),
)
async def verify_order(
    body: VerifyOrderIn, user: CurrentUser, session: SessionDep, container: ContainerDep
) -> PurePicEnvelope[PurePicCreditsOut]:
    """Razorpay Checkout's handler result, posted as is (OrderService.js:39-48); the client needs HTTP
    200. The signature is checked and the pack credited once, whichever of this and the webhooks
    comes first."""
    await checkout.verify_razorpay_payment(
        session,
        container,
        user,
        order_id=body.razorpay_order_id,
        payment_id=body.razorpay_payment_id,
        signature=body.razorpay_signature,
    )
    balance = await credits.balance_of(session, user.id)
    return PurePicEnvelope(data=PurePicCreditsOut(credits=whole_credits(balance)))
