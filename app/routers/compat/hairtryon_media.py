"""The Hair Try-On SPA's image, upload and payment routes (contract rows #15-#26 of the seed-clients
reference), on the native services. What differs from the native API is shape only: lowercase
statuses, absolute links, an S3-style presigned POST, `next_page` paging, side views nested under the
try-on they were made from, prices in major units."""

from __future__ import annotations

import re
import uuid
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import UploadFile as StarletteUploadFile

from app.container import Container
from app.dependencies import ContainerDep, SessionDep
from app.errors import AppError, BadRequest, NotFound
from app.models import MILLICREDITS_PER_CREDIT, Job, JobKind, Order, OrderStatus, Provider, User
from app.routers.compat._hairtryon_session import HAIRTRYON_PREFIX, HairTryOnUser, S3UploadRefusal
from app.schemas.compat.hairtryon_media import (
    CheckoutIn,
    CheckoutOut,
    HairTryOnGenerateIn,
    HairTryOnStyleOut,
    ImageIdOut,
    ImageStatusOut,
    LowercaseStatus,
    PresignOut,
    SideViewsOut,
    TransactionOut,
    UserImageOut,
    UserImagesOut,
    ViewGenerateIn,
)
from app.schemas.errors import DESCRIPTIONS, S3_ERROR_XML, HairTryOnErrorOut, error_responses
from app.services import generation, images, upload_policy, uploads
from app.services.billing import checkout, orders
from app.tasks import dispatch

router = APIRouter(prefix=HAIRTRYON_PREFIX, tags=["compat: Hair Try-On"])

# Where these routes are mounted (app/routers/compat/__init__.py): the links handed to the SPA are
# absolute, on PUBLIC_BASE_URL, since the SPA is served from another origin.
MOUNTED_AT = f"/compat{HAIRTRYON_PREFIX}"
FILES_PATH = f"{MOUNTED_AT}/files"
_OUR_FILE = re.compile(rf"^{re.escape(FILES_PATH)}/(?P<id>[0-9a-fA-F-]{{36}})$")
# The original server lists 10 try-ons a page; the SPA never asks for another size.
HISTORY_PAGE_SIZE = 10
RECENT_UPLOADS = 5


def _link(container: Container, path: str) -> str:
    return container.settings.public_base_url.rstrip("/") + path


def file_url(container: Container, upload_id: uuid.UUID) -> str:
    """An upload's stable link: it never expires, and sent back as an `image_input_url` it names the
    upload again."""
    signature = upload_policy.file_signature(container, upload_id)
    return _link(container, f"{FILES_PATH}/{upload_id}?sig={signature}")


def _upload_named(container: Container, url: str) -> uuid.UUID | None:
    """The upload one of our file links names; None for any other URL. A link of ours whose signature
    does not hold names no upload anyone has: 404."""
    parts = urlsplit(url)
    match = _OUR_FILE.match(parts.path)
    if match is None:
        return None
    upload_id = uuid.UUID(match["id"])
    signature = parse_qs(parts.query).get("sig", [""])[0]
    if not upload_policy.file_signature_holds(container, upload_id, signature):
        raise NotFound("No such upload.")
    return upload_id


def _lowercase(status: str) -> LowercaseStatus:
    lowered = status.lower()
    assert lowered in ("pending", "processing", "completed", "failed")
    return lowered  # type: ignore[return-value]


def _output_keys(job: Job) -> dict[str, str]:
    return {str(output.get("view", "main")): str(output["key"]) for output in job.outputs}


async def _url(container: Container, key: str | None) -> str | None:
    return await images.url_for(container, key) if key else None


# --- #15 styles, #16 uploads --------------------------------------------------------------------------


@router.get("/image/styles", response_model=list[HairTryOnStyleOut])
async def styles(session: SessionDep) -> list[HairTryOnStyleOut]:
    """Every active style; the SPA splits them into its "standard" and "celebrity" tabs by category."""
    return [
        HairTryOnStyleOut(
            id=style.id, name=style.name, category=style.category, image_url=style.thumbnail_url or ""
        )
        for style in await generation.list_styles(session)
    ]


@router.get(
    "/user/uploads", response_model=list[str], responses=error_responses(400, 401, model=HairTryOnErrorOut)
)
async def recent_uploads(user: HairTryOnUser, session: SessionDep, container: ContainerDep) -> list[str]:
    """The stable links of the user's last five uploads (the SPA offers them as "previous photos")."""
    page = await images.gallery(
        session,
        user.id,
        limit=RECENT_UPLOADS,
        cursor=None,
        kind=images.UPLOAD_KIND,
        status=None,
        favourite=None,
    )
    return [file_url(container, item.id) for item in page.items]


# --- #17, #18 the presigned POST and the stable file links ---------------------------------------------


@router.get(
    "/files/presign", response_model=PresignOut, responses=error_responses(400, 401, model=HairTryOnErrorOut)
)
async def presign(
    user: HairTryOnUser,
    container: ContainerDep,
    file_name: Annotated[str, Query(max_length=1024)],
    file_type: Annotated[str, Query(max_length=255)],
) -> PresignOut:
    """An upload policy for one photo, the way S3's presigned POST hands one out: POST `fields` and then
    `file` to `upload_url`, without credentials, before it expires. The photo will be at `file_url`.
    `file_name` and `file_type` are not trusted: the type is decided from the bytes."""
    signed = upload_policy.issue(container, user.id)
    policy = signed.policy
    return PresignOut(
        upload_url=_link(container, f"{FILES_PATH}/upload"),
        fields={"key": policy.key, "policy": signed.encoded, "signature": signed.signature},
        file_url=file_url(container, policy.upload_id),
        key=policy.key,
    )


def _s3_refusal(exc: AppError, proposed_size: int | None, max_size: int) -> S3UploadRefusal:
    if isinstance(exc, upload_policy.PolicyRefused):
        return S3UploadRefusal(403, "AccessDenied", exc.detail)
    if isinstance(exc, uploads.ImageTooLarge):
        sizes = {"ProposedSize": proposed_size} if proposed_size is not None else {}
        return S3UploadRefusal(400, "EntityTooLarge", exc.detail, **sizes, MaxSizeAllowed=max_size)
    if exc.status_code >= 500:
        return S3UploadRefusal(503, "ServiceUnavailable", exc.detail)
    return S3UploadRefusal(exc.status_code, "InvalidArgument", exc.detail)


@router.post(
    "/files/upload",
    status_code=204,
    response_class=Response,
    responses={
        status: {"content": S3_ERROR_XML, "description": f"S3-style <Error> XML: {DESCRIPTIONS[status]}"}
        for status in (400, 403, 404, 415, 422, 503)
    },
)
async def upload(request: Request, session: SessionDep, container: ContainerDep) -> Response:
    """The presigned POST: multipart `key`, `policy`, `signature`, then `file`. The signed policy is the
    only credential (no cookies are sent); the photo passes the same validation as every upload. 204, or
    an S3 `<Error>` document: AccessDenied for a bad or expired policy, EntityTooLarge with
    ProposedSize and MaxSizeAllowed, InvalidArgument for a file that is not a usable photo."""
    async with request.form(max_files=1, max_fields=10) as form:
        encoded, signature, key, file = (form.get(name) for name in ("policy", "signature", "key", "file"))
        if not isinstance(encoded, str) or not isinstance(signature, str):
            raise S3UploadRefusal(403, "AccessDenied", "The upload policy is missing; ask for a new one.")
        if not isinstance(file, StarletteUploadFile):
            raise S3UploadRefusal(
                400, "InvalidArgument", "POST requires exactly one file upload per request."
            )
        proposed = file.size
        try:
            policy = upload_policy.verify(container, encoded, signature)
            if key != policy.key:
                raise upload_policy.PolicyRefused("Invalid according to Policy: the key is not the policy's.")
            if proposed is not None and proposed > policy.max_bytes:
                raise S3UploadRefusal(
                    400,
                    "EntityTooLarge",
                    "Your proposed upload exceeds the maximum allowed size",
                    ProposedSize=proposed,
                    MaxSizeAllowed=policy.max_bytes,
                )
            data = await file.read(policy.max_bytes + 1)
            await upload_policy.store(session, container, policy, data)
        except AppError as exc:
            raise _s3_refusal(exc, proposed, container.settings.upload_max_bytes) from exc
    return Response(status_code=204)


@router.get(
    "/files/{upload_id}", response_class=RedirectResponse, status_code=302, responses=error_responses(404)
)
async def uploaded_file(
    upload_id: uuid.UUID,
    session: SessionDep,
    container: ContainerDep,
    sig: Annotated[str, Query(max_length=128)],
) -> RedirectResponse:
    """A stable link's photo: a redirect to its storage URL of the moment (the signature is the only
    authorisation, so an <img> on the SPA's origin can show it)."""
    location = await upload_policy.file_location(session, container, upload_id, sig)
    return RedirectResponse(location, status_code=302, headers={"Cache-Control": "private, max-age=300"})


# --- #19, #20, #23 try-ons, their status and side views ------------------------------------------------


@router.post(
    "/image/generate",
    response_model=ImageIdOut,
    responses=error_responses(400, 401, 402, 403, 503, model=HairTryOnErrorOut),
)
async def generate(
    body: HairTryOnGenerateIn,
    user: HairTryOnUser,
    session: SessionDep,
    container: ContainerDep,
    background: BackgroundTasks,
) -> ImageIdOut:
    """The front view of a style on a photo: one of our file links (its upload), or any public https
    image URL, which is handed to the model as is. Poll image/status/{image_id}."""
    url = str(body.image_input_url)
    upload_id = _upload_named(container, url)
    if upload_id is None and body.image_input_url.scheme != "https":
        raise BadRequest("image_input_url must be an https URL, or a file_url from files/presign.")
    dispatcher = dispatch.dispatcher_for(container)
    await dispatcher.ensure_open()  # 503 with nothing reserved when the job queue is down
    job = await generation.submit(
        session,
        container,
        user,
        style_id=body.style_id,
        upload_id=upload_id,
        image_url=None if upload_id is not None else url,
        views=["front"],
    )
    dispatcher.after_commit(background, job.id)
    return ImageIdOut(image_id=job.id)


@router.post(
    "/image/view-generate",
    response_model=ImageIdOut,
    responses=error_responses(400, 401, 402, 403, 404, 503, model=HairTryOnErrorOut),
)
async def view_generate(
    body: ViewGenerateIn,
    user: HairTryOnUser,
    session: SessionDep,
    container: ContainerDep,
    background: BackgroundTasks,
) -> ImageIdOut:
    """Right, left and back views of a finished try-on, made from its front view (charged per view).
    Answers the id of the side-view job: its status carries the three view URLs once completed."""
    dispatcher = dispatch.dispatcher_for(container)
    await dispatcher.ensure_open()
    job = await generation.submit_side_views(session, container, user, body.image_id)
    dispatcher.after_commit(background, job.id)
    return ImageIdOut(image_id=job.id)


@router.get(
    "/image/status/{image_id}",
    response_model=ImageStatusOut,
    responses=error_responses(400, 401, 404, model=HairTryOnErrorOut),
)
async def image_status(
    image_id: uuid.UUID, user: HairTryOnUser, session: SessionDep, container: ContainerDep
) -> ImageStatusOut:
    """A try-on's status (lowercase) and front view, with the side views of its latest finished side-view
    job; or a side-view job's own status and views, with the front view they were made from."""
    job = await images.get_job(session, user, image_id)
    own = _output_keys(job)
    if job.parent_job_id is not None:
        front, views = job.input_key, own
    else:
        side = (await images.latest_children(session, user, [job])).get(job.id)
        front, views = own.get("front"), _output_keys(side) if side is not None else {}
    return ImageStatusOut(
        id=job.id,
        status=_lowercase(job.status),
        output_image_url=await _url(container, front),
        description=job.description,
        right_view_url=await _url(container, views.get("right")),
        left_view_url=await _url(container, views.get("left")),
        back_view_url=await _url(container, views.get("back")),
    )


# --- #21, #22 history and favourites ------------------------------------------------------------------


@router.get(
    "/user/images", response_model=UserImagesOut, responses=error_responses(400, 401, model=HairTryOnErrorOut)
)
async def history(
    user: HairTryOnUser,
    session: SessionDep,
    container: ContainerDep,
    page: Annotated[str, Query(max_length=200)] = "1",
    favourites: bool = False,
    limit: Annotated[int, Query(ge=1, le=50)] = HISTORY_PAGE_SIZE,
) -> UserImagesOut:
    """The user's try-ons, newest first, side views nested. `page` is 1 or the `next_page` of the page
    before (an opaque cursor the SPA echoes); `favourites=false` lists them all; `total_images` counts
    every page."""
    cursor = None if page == "1" else page
    favourite = True if favourites else None
    found = await images.gallery(
        session,
        user.id,
        limit=limit,
        cursor=cursor,
        kind=JobKind.generate.value,
        status=None,
        favourite=favourite,
        top_level_only=True,
    )
    jobs = [item for item in found.items if isinstance(item, Job)]
    total = await images.count_jobs(
        session, user, kind=JobKind.generate.value, favourite=favourite, top_level_only=True
    )
    sides = await images.latest_children(session, user, jobs)
    style_ids = [style_id for job in jobs if (style_id := _style_id(job)) is not None]
    names = {
        style_id: style.name
        for style_id, style in (await generation.styles_by_id(session, style_ids)).items()
    }
    return UserImagesOut(
        images=[await _history_item(container, job, sides.get(job.id), names) for job in jobs],
        page=1 if cursor is None else page,
        limit=limit,
        next_page=found.next_cursor,
        total_images=total,
    )


def _style_id(job: Job) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(job.options.get("style_id")))
    except ValueError:
        return None


async def _history_item(
    container: Container, job: Job, side: Job | None, names: dict[uuid.UUID, str]
) -> UserImageOut:
    if job.input_upload_id is not None:
        input_url: str | None = file_url(container, job.input_upload_id)
    else:
        input_url = job.options.get("image_url") or await _url(container, job.input_key)
    side_views = None
    if side is not None:
        views = _output_keys(side)
        if all(view in views for view in ("right", "left", "back")):
            side_views = SideViewsOut(
                right_view_url=await images.url_for(container, views["right"]),
                left_view_url=await images.url_for(container, views["left"]),
                back_view_url=await images.url_for(container, views["back"]),
            )
    style_id = _style_id(job)
    return UserImageOut(
        id=job.id,
        input_image_url=input_url,
        output_image_url=await _url(container, _output_keys(job).get("front")),
        description=job.description,
        style_name=names.get(style_id, "") if style_id else "",
        side_views=side_views,
        status=_lowercase(job.status),
        created_at=job.created_at,
        time_taken=job.time_taken_ms / 1000 if job.time_taken_ms is not None else None,
        is_favourite=job.is_favourite,
    )


@router.post("/image/like/{image_id}", responses=error_responses(400, 401, 403, 404, model=HairTryOnErrorOut))
async def like(image_id: uuid.UUID, user: HairTryOnUser, session: SessionDep) -> dict[str, str]:
    await _set_favourite(session, user, image_id, True)
    return {"detail": "Added to your favourites."}


@router.post(
    "/image/dislike/{image_id}", responses=error_responses(400, 401, 403, 404, model=HairTryOnErrorOut)
)
async def dislike(image_id: uuid.UUID, user: HairTryOnUser, session: SessionDep) -> dict[str, str]:
    await _set_favourite(session, user, image_id, False)
    return {"detail": "Removed from your favourites."}


async def _set_favourite(session: AsyncSession, user: User, image_id: uuid.UUID, value: bool) -> None:
    await images.get_job(session, user, image_id)  # a try-on of theirs, not an upload or anyone else's
    await images.update_item(session, user, image_id, {"is_favourite": value})


# --- #24-#26 buying credits (Dodo Payments) ------------------------------------------------------------


@router.post(
    "/payments/checkout",
    response_model=CheckoutOut,
    responses=error_responses(400, 401, 403, 503, model=HairTryOnErrorOut),
)
async def buy_credits(
    body: CheckoutIn, user: HairTryOnUser, session: SessionDep, container: ContainerDep
) -> CheckoutOut:
    """A Dodo Payments checkout of `quantity` credits (DODO_PRICE_PER_CREDIT_CENTS each, in
    DODO_CURRENCY), returning to the SPA's own payment page, FRONTEND_URL/payment, which reads the
    `payment_id` Dodo adds and asks payments/transaction/{payment_id}."""
    settings = container.settings
    order = await checkout.create_checkout(
        session,
        container,
        user,
        provider=Provider.dodo,
        plan_ref=None,
        custom_credits=body.quantity,
        currency=settings.dodo_currency,
        idempotency_key="",
        return_url=f"{settings.frontend_url.rstrip('/')}/payment",
    )
    assert order.checkout_url is not None
    assert order.provider_order_id is not None
    return CheckoutOut(session_id=order.provider_order_id, checkout_url=order.checkout_url)


_PAYMENT_STATUS = {
    OrderStatus.created.value: "processing",
    OrderStatus.paid.value: "succeeded",
    OrderStatus.refunded.value: "succeeded",  # it was paid; the refund is another story
    OrderStatus.failed.value: "failed",
}


def _transaction(order: Order) -> TransactionOut:
    return TransactionOut(
        id=order.id,
        session_id=order.provider_order_id,
        payment_id=order.provider_payment_id,
        # Minor units to major: Dodo's currencies here (INR, USD) have two decimals.
        amount=order.amount / 100,
        currency=order.currency,
        status=_PAYMENT_STATUS[order.status],
        quantity=order.credits // MILLICREDITS_PER_CREDIT,
        created_at=order.created_at,
    )


@router.get(
    "/payments/transaction/{payment_id}",
    response_model=TransactionOut,
    responses=error_responses(400, 401, 404, model=HairTryOnErrorOut),
)
async def transaction(payment_id: str, user: HairTryOnUser, session: SessionDep) -> TransactionOut:
    """The purchase Dodo's payment `payment_id` paid: 404 until Dodo's webhook has told us (the SPA
    retries twice), and for anyone else's payment."""
    return _transaction(await orders.get_by_payment_id(session, user, Provider.dodo, payment_id))


@router.get(
    "/payments/transactions",
    response_model=list[TransactionOut],
    responses=error_responses(400, 401, model=HairTryOnErrorOut),
)
async def transactions(user: HairTryOnUser, session: SessionDep) -> list[TransactionOut]:
    """The user's paid purchases, newest first."""
    return [_transaction(order) for order in await orders.list_orders(session, user, status=OrderStatus.paid)]
