"""Rows a test needs, made through the services as the app makes them: users, tokens, API keys, orders."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.models import CloneModel, CloneModelPhoto, Order, User
from app.repositories.billing import OrderRepository
from app.services import api_keys as api_keys_service
from app.services import catalogue
from app.services import users as users_service


def new_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


async def make_user(session: AsyncSession, settings: Settings, **fields: Any) -> User:
    """A verified local account without a password, with its signup bonus; `fields` override."""
    values: dict[str, Any] = {"email": new_email(), "email_verified_at": utcnow(), **fields}
    return await users_service.create_user(session, settings, **values)


def access_token(container: Container, user: User) -> str:
    return container.tokens.issue(user.id, "access")[0]


def bearer(container: Container, user: User) -> dict[str, str]:
    """The Authorization header of a fresh access token for `user`."""
    return {"Authorization": f"Bearer {access_token(container, user)}"}


async def make_api_key(session: AsyncSession, user: User, name: str = "test") -> dict[str, str]:
    """A new API key of `user`, as the Authorization header that presents it."""
    created = await api_keys_service.create(session, user, name)
    return {"Authorization": f"Bearer {created.secret}"}


async def make_order(
    session: AsyncSession,
    user: User,
    *,
    provider: str = "stripe",
    plan: str = "basic",
    currency: str = "USD",
    **fields: Any,
) -> Order:
    """An order of `user` for `plan` at its catalogue price in `currency`, as a checkout records it before
    asking the provider (no checkout id unless `fields` give one, e.g. `provider_order_id`)."""
    priced = await catalogue.get_active_plan(session, plan)
    price = priced.price(currency)
    assert price is not None, f"{plan} is not sold in {currency}"
    values: dict[str, Any] = {
        "user_id": user.id,
        "provider": provider,
        "plan_id": priced.plan.id,
        "kind": priced.plan.kind,
        "amount": price.amount,
        "currency": currency,
        "credits": priced.plan.credits,
        **fields,
    }
    return await OrderRepository(session).add(Order(**values))


async def make_clone_model(
    session: AsyncSession, user: User, photo_ids: list[uuid.UUID], *, status: str = "training", **fields: Any
) -> CloneModel:
    """A personal model of `user` trained (or training) on `photo_ids`, without any provider call."""
    values: dict[str, Any] = {"name": "Me", "trigger_word": f"tok{uuid.uuid4().hex[:8]}", **fields}
    model = CloneModel(user_id=user.id, status=status, **values)
    session.add(model)
    await session.flush()
    session.add_all([CloneModelPhoto(model_id=model.id, photo_id=photo_id) for photo_id in photo_ids])
    await session.commit()
    return model
