"""Personal models: a LoRA trained on Replicate from some of the user's photos under a trigger word.

A training is not a job of the runner: it has no output of ours, runs on Replicate for tens of minutes
and must not hold a worker. It moves the credits the way jobs do (held at the start, captured when it
succeeds, released when it fails or is cancelled, one ledger key per model) and goes through three steps:

1. `create` (the request's transaction): checks, plan quota, the model row (`training`) and the hold.
2. `start` (after commit): the chosen photos are zipped, uploaded through Replicate's Files API (our
   storage may have no public URL), the user's destination model is created when missing, and the
   training starts with our webhook URL.
3. `apply`: a training's end lands once, whoever reports it first: the signed webhook (`receive_webhook`),
   the poller of trainings the webhook left waiting (`poll`, from the housekeeping loop), or `delete`.
   A model that is no longer `training` is never changed again, so a replayed report does nothing.

What the start needs from Replicate is in replicate_setup.py; how an owner reads models, in views.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.db.base import utcnow
from app.errors import (
    AppError,
    Conflict,
    PayloadTooLarge,
    ProviderNotConfigured,
    ServiceUnavailable,
)
from app.integrations.images.base import EngineError, Training
from app.integrations.images.replicate import TERMINAL_STATUSES
from app.integrations.storage import StorageError
from app.models import CloneModel, CloneModelStatus, UsageAction, User
from app.repositories.clones import CloneModelRepository, ClonePhotoRepository
from app.services import credits, usage, users, webhook_inbox
from app.services.clones import quotas
from app.services.clones.photos import PhotoNotFound
from app.services.clones.replicate_setup import (
    destination_for,
    ensure_destination,
    trainer,
    training_input,
    zip_photos,
)
from app.services.clones.views import CloneModelNotFound, ModelView
from app.services.engines import predictions
from app.services.webhook_inbox import Outcome

log = structlog.get_logger("app.clones.training")

# A model whose training was never recorded as started this long after it was created is failed (and
# released): the process that was starting it died.
START_GRACE = timedelta(minutes=30)
# Trainings the poller looks at per round.
POLL_BATCH = 50


class NotEnoughPhotos(AppError):
    status_code = 422
    code = "not_enough_photos"


class TooManyPhotos(AppError):
    status_code = 422
    code = "too_many_photos"


class TrainingSetTooLarge(PayloadTooLarge):
    code = "training_set_too_large"


class TriggerWordTaken(Conflict):
    code = "trigger_word_taken"
    default_detail = "One of your models already uses this trigger word (deleted models keep theirs)."


def reservation_key(model_id: uuid.UUID) -> str:
    return f"clone_model:{model_id}:reserve"


# --- 1. the request ------------------------------------------------------------------------------------


async def create(
    session: AsyncSession,
    ctx: Container,
    user: User,
    *,
    name: str,
    trigger_word: str,
    photo_ids: list[uuid.UUID],
    options: Mapping[str, Any],
) -> tuple[ModelView, dict[str, Any]]:
    """The model, `training`, with its credits held; and the trainer input `start` is to send. Every
    refusal comes before anything is written (a 402 from the hold rolls the request back)."""
    trainer(ctx)
    settings = ctx.settings
    chosen = list(dict.fromkeys(photo_ids))
    if len(chosen) < settings.clone_training_min_photos:
        raise NotEnoughPhotos(
            f"A training needs at least {settings.clone_training_min_photos} different photos; "
            f"{len(chosen)} were chosen."
        )
    if len(chosen) > settings.clone_training_max_photos:
        raise TooManyPhotos(f"A training takes at most {settings.clone_training_max_photos} photos.")
    base_input = training_input(settings, trigger_word, options)
    await users.lock_open(session, user.id)  # one request at a time takes the last quota slot
    await quotas.require(session, settings, user, quotas.QuotaName.models)
    models = CloneModelRepository(session)
    if await models.trigger_word_taken(user.id, trigger_word):
        raise TriggerWordTaken()
    found = await ClonePhotoRepository(session).owned_with_uploads(user.id, chosen)
    if len(found) != len(chosen):
        raise PhotoNotFound("One of the photos does not exist (or is not yours).")
    total = sum(upload.size for _, upload in found)
    if total > settings.clone_training_max_zip_bytes:
        raise TrainingSetTooLarge(
            f"The chosen photos add up to {total} bytes; a training takes at most "
            f"{settings.clone_training_max_zip_bytes}."
        )
    cost = credits.to_millicredits(settings.clone_training_cost_credits)
    model = await models.add(
        CloneModel(
            id=uuid.uuid4(),
            user_id=user.id,
            name=name.strip() or name,
            trigger_word=trigger_word,
            status=CloneModelStatus.training.value,
            provider_model=destination_for(settings, user.id),
            credits_reserved=cost,
        )
    )
    await models.add_photos(model.id, chosen)
    if cost:
        await credits.reserve(
            session, user.id, cost, reservation_key(model.id), reference=f"clone_model:{model.id}"
        )
    log.info("clone.training_requested", model_id=str(model.id), photos=len(chosen))
    return ModelView(model, sorted(chosen)), base_input


# --- 2. the start, after commit ------------------------------------------------------------------------


async def start(ctx: Container, model_id: uuid.UUID, base_input: dict[str, Any]) -> None:
    """Hand the photos to Replicate and start the training. A failure fails the model (credits back)."""
    settings = ctx.settings
    async with ctx.database.session_scope() as session:
        model = await CloneModelRepository(session).get(model_id)
        if model is None or model.status != CloneModelStatus.training.value or model.provider_training_id:
            return
        photos = [
            (upload.storage_key, upload.content_type)
            for _, upload in await CloneModelRepository(session).photo_uploads(model_id)
        ]
        destination = model.provider_model or destination_for(settings, model.user_id)
    try:
        client = trainer(ctx)
        archive = await zip_photos(ctx, photos)
        uploaded = await client.upload_file(
            archive,
            filename=f"clone-{model_id.hex}.zip",
            content_type="application/zip",
            metadata={"clone_model_id": str(model_id)},
        )
        await ensure_destination(client, settings, destination)
        training = await client.create_training(
            settings.clone_trainer_version,
            destination=destination,
            input={"input_images": uploaded.url, **base_input},
            webhook_url=predictions.webhook_url(settings),
        )
    except (EngineError, StorageError, ProviderNotConfigured) as exc:
        log.warning("clone.training_not_started", model_id=str(model_id), error=str(exc))
        await _fail_unstarted(ctx, model_id, f"The training could not be started: {exc}")
        return
    async with ctx.database.session_scope() as session:
        model = await CloneModelRepository(session).get(model_id, for_update=True)
        if model is not None and model.status == CloneModelStatus.training.value:
            model.provider_training_id = training.id
            model.logs_url = training.logs_url
            if training.status in TERMINAL_STATUSES:
                await apply(session, model, training)
            log.info("clone.training_started", model_id=str(model_id), training_id=training.id)
            return
    # Deleted (or cancelled) while it was being started: it must not run for nobody.
    try:
        await client.cancel_training(training.id)
    except EngineError as exc:
        log.warning("clone.orphan_not_canceled", training_id=training.id, error=str(exc))


async def _fail_unstarted(ctx: Container, model_id: uuid.UUID, message: str) -> None:
    async with ctx.database.session_scope() as session:
        model = await CloneModelRepository(session).get(model_id, for_update=True)
        if model is not None and model.status == CloneModelStatus.training.value:
            await _end(session, model, CloneModelStatus.failed, message[:2000])


# --- 3. the end ------------------------------------------------------------------------------------------


async def apply(session: AsyncSession, model: CloneModel, training: Training) -> bool:
    """Apply what Replicate says of the model's training (the caller holds the model's row lock). Only a
    model still `training` changes; returns whether this call changed it."""
    if model.status != CloneModelStatus.training.value:
        return False
    if training.logs_url and not model.logs_url:
        model.logs_url = training.logs_url
    if training.status not in TERMINAL_STATUSES:
        return False
    if training.status == "succeeded" and training.version:
        model.provider_version = training.version
        await _end(session, model, CloneModelStatus.ready, None)
    elif training.status == "succeeded":
        await _end(session, model, CloneModelStatus.failed, "The training ended without a model version.")
    elif training.status == "failed":
        await _end(session, model, CloneModelStatus.failed, (training.error or "The training failed.")[:2000])
    else:
        await _end(session, model, CloneModelStatus.canceled, training.error)
    return True


async def _end(session: AsyncSession, model: CloneModel, status: CloneModelStatus, error: str | None) -> None:
    """The model's last state, with its credits captured (ready) or released (anything else) and its
    usage record, in the caller's transaction."""
    success = status is CloneModelStatus.ready
    model.status = status.value
    model.error_message = error
    model.finished_at = utcnow()
    if model.credits_reserved:
        key = reservation_key(model.id)
        await (credits.capture(session, key) if success else credits.release(session, key))
    await usage.record(
        session,
        user_id=model.user_id,
        action=UsageAction.clone_training,
        credits=model.credits_reserved if success else 0,
        object_id=model.id,
        success=success,
    )
    log.info("clone.training_ended", model_id=str(model.id), status=status.value)


async def is_training(session: AsyncSession, training_id: str) -> bool:
    return await CloneModelRepository(session).by_training_id(training_id) is not None


async def receive_webhook(
    session: AsyncSession, headers: Mapping[str, str], payload: dict[str, Any], training: Training
) -> Outcome:
    """A verified Replicate webhook about one of our trainings: recorded once, applied once."""

    async def handle() -> bool:
        model = await CloneModelRepository(session).by_training_id(training.id, for_update=True)
        if model is None:
            return False
        await apply(session, model, training)
        return True

    event_id = headers.get("webhook-id") or f"{training.id}:{training.status}"
    return await webhook_inbox.receive(
        session, "replicate", event_id, f"training.{training.status}", payload, handle
    )


async def poll(ctx: Container, now: datetime | None = None) -> int:
    """Ask Replicate about trainings the webhook has not ended after CLONE_TRAINING_POLL_AFTER_SECONDS
    (each is asked again that long after), end those past CLONE_TRAINING_TIMEOUT_SECONDS, and fail
    those whose start never got recorded. Returns how many models it ended."""
    if ctx.replicate is None:
        return 0
    settings = ctx.settings
    now = now or utcnow()
    async with ctx.database.session_scope() as session:
        due = [
            (model.id, model.provider_training_id, model.created_at)
            for model in await CloneModelRepository(session).training_not_updated_since(
                now - timedelta(seconds=settings.clone_training_poll_after_seconds), POLL_BATCH
            )
        ]
    ended = 0
    for model_id, training_id, created_at in due:
        if training_id is None:
            if created_at < now - START_GRACE:
                await _fail_unstarted(ctx, model_id, "The training could not be started.")
                ended += 1
            continue
        try:
            training = await ctx.replicate.get_training(training_id)
            timed_out = created_at < now - timedelta(seconds=settings.clone_training_timeout_seconds)
            if training.status not in TERMINAL_STATUSES and timed_out:
                canceled = await ctx.replicate.cancel_training(training_id)
                if canceled.status != "succeeded":
                    limit = settings.clone_training_timeout_seconds
                    training = Training(
                        training_id,
                        "failed",
                        error=f"The training took longer than {limit:g} s.",
                        raw=canceled.raw,
                    )
                else:
                    training = canceled
        except EngineError as exc:
            log.warning("clone.poll_failed", model_id=str(model_id), error=str(exc))
            continue
        async with ctx.database.session_scope() as session:
            model = await CloneModelRepository(session).get(model_id, for_update=True)
            if model is None:
                continue
            if await apply(session, model, training):
                ended += 1
            else:
                model.updated_at = utcnow()  # asked again a poll interval from now
    if due:
        log.info("clone.trainings_polled", polled=len(due), ended=ended)
    return ended


# --- reading and deleting ----------------------------------------------------------------------------------


async def delete(session: AsyncSession, ctx: Container, user: User, model_id: uuid.UUID) -> None:
    """Cancel a running training (its credits go back), delete the trained version on Replicate where
    it lets us, and delete the model. A model that was trained stays counted by the plan's lifetime
    quota (its row is kept, hidden); a failed or cancelled one is deleted for good, freeing its trigger
    word."""
    models = CloneModelRepository(session)
    model = await models.get_for_user(model_id, user.id, for_update=True)
    if model is None:
        raise CloneModelNotFound()
    if model.status == CloneModelStatus.training.value:
        if model.provider_training_id is None:
            # Still being started: `start` sees it cancelled and cancels what it started.
            await _end(session, model, CloneModelStatus.canceled, None)
        else:
            try:
                training = await trainer(ctx).cancel_training(model.provider_training_id)
            except EngineError as exc:
                if exc.code != "provider_not_found":
                    raise ServiceUnavailable(
                        "The training could not be cancelled right now; retry shortly.",
                        headers={"Retry-After": "30"},
                    ) from exc
                training = Training(model.provider_training_id, "canceled")
            await apply(session, model, training)  # cancelled, or ended just before: whatever it says
    if model.status == CloneModelStatus.ready.value and model.provider_version:
        await _delete_version(ctx, model.provider_version)
    if model.status == CloneModelStatus.ready.value:
        model.deleted_at = utcnow()
    else:
        await session.delete(model)
    await session.flush()
    log.info("clone.model_deleted", model_id=str(model_id))


async def cancel_for_erasure(session: AsyncSession, ctx: Container, user_id: uuid.UUID) -> int:
    """Cancel every training of an account being erased and release its credits; how many ended. The
    erasure never waits on Replicate: a training it cannot cancel now is ended here all the same (its
    late webhook and the polling then find nothing to change) and logged, to be cancelled by hand."""
    ended = 0
    for model in await CloneModelRepository(session).training_for_user(user_id):
        if model.provider_training_id is None:
            # Still being started: `start` sees it cancelled and cancels what it started.
            await _end(session, model, CloneModelStatus.canceled, None)
            ended += 1
            continue
        training = Training(model.provider_training_id, "canceled")
        if ctx.replicate is not None:
            try:
                training = await ctx.replicate.cancel_training(model.provider_training_id)
            except EngineError as exc:
                log.warning(
                    "clone.orphan_not_canceled", training_id=model.provider_training_id, error=str(exc)
                )
        if training.status not in TERMINAL_STATUSES:  # asked to cancel; it ends shortly on Replicate
            training = Training(model.provider_training_id, "canceled")
        ended += await apply(session, model, training)
    return ended


async def _delete_version(ctx: Container, version: str) -> None:
    """Best effort: Replicate may refuse (a version that ran predictions is kept); the model goes anyway."""
    if ctx.replicate is None:
        return
    reference, _, version_id = version.partition(":")
    try:
        await ctx.replicate.delete_model_version(reference, version_id)
    except (EngineError, ValueError) as exc:
        log.warning("clone.version_not_deleted", version=version, error=str(exc))
