from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, false, func, or_, select, true

from app.models import DesignSystem, DesignSystemTag, User
from app.repositories.base import Repository


@dataclass(frozen=True)
class ShowcaseCursor:
    """The last item of a showcase page: (featured, shared_at, id), in the showcase's order."""

    featured: bool
    shared_at: datetime
    id: uuid.UUID


@dataclass(frozen=True)
class ShowcaseRow:
    system: DesignSystem
    owner_username: str | None
    owner_name: str | None


def _has_tag(tag: str) -> ColumnElement[bool]:
    return DesignSystem.id.in_(select(DesignSystemTag.design_system_id).where(DesignSystemTag.tag == tag))


class DesignSystemRepository(Repository[DesignSystem]):
    model = DesignSystem

    async def get_owned(
        self, system_id: uuid.UUID, user_id: uuid.UUID, *, for_update: bool = False
    ) -> DesignSystem | None:
        statement = select(DesignSystem).where(DesignSystem.id == system_id, DesignSystem.user_id == user_id)
        if for_update:
            statement = statement.with_for_update()
        system: DesignSystem | None = await self.session.scalar(statement)
        return system

    async def get_public(self, system_id: uuid.UUID) -> ShowcaseRow | None:
        """A shared system whose owner's account is still open."""
        row = (
            await self.session.execute(
                select(DesignSystem, User.username, User.name)
                .join(User, User.id == DesignSystem.user_id)
                .where(DesignSystem.id == system_id, _showcased())
            )
        ).first()
        return ShowcaseRow(row[0], row[1], row[2]) if row else None

    async def count_for_user(self, user_id: uuid.UUID) -> int:
        count = await self.session.scalar(
            select(func.count()).select_from(DesignSystem).where(DesignSystem.user_id == user_id)
        )
        return int(count or 0)

    async def page_for_user(
        self,
        user_id: uuid.UUID,
        limit: int,
        before: tuple[datetime, uuid.UUID] | None,
        tag: str | None,
    ) -> list[DesignSystem]:
        """The user's systems, newest first."""
        statement = select(DesignSystem).where(DesignSystem.user_id == user_id)
        if tag is not None:
            statement = statement.where(_has_tag(tag))
        if before is not None:
            moment, last_id = before
            statement = statement.where(
                or_(
                    DesignSystem.created_at < moment,
                    and_(DesignSystem.created_at == moment, DesignSystem.id < last_id),
                )
            )
        statement = statement.order_by(DesignSystem.created_at.desc(), DesignSystem.id.desc()).limit(limit)
        return list(await self.session.scalars(statement))

    async def showcase_page(
        self, limit: int, after: ShowcaseCursor | None, tag: str | None
    ) -> list[ShowcaseRow]:
        """Shared systems of open accounts: featured first, then the most recently shared."""
        statement = (
            select(DesignSystem, User.username, User.name)
            .join(User, User.id == DesignSystem.user_id)
            .where(_showcased())
        )
        if tag is not None:
            statement = statement.where(_has_tag(tag))
        if after is not None:
            later = or_(
                DesignSystem.shared_at < after.shared_at,
                and_(DesignSystem.shared_at == after.shared_at, DesignSystem.id < after.id),
            )
            same_group = DesignSystem.featured == (true() if after.featured else false())
            statement = statement.where(
                or_(and_(same_group, later), DesignSystem.featured == false())
                if after.featured
                else and_(same_group, later)
            )
        statement = statement.order_by(
            DesignSystem.featured.desc(), DesignSystem.shared_at.desc(), DesignSystem.id.desc()
        ).limit(limit)
        rows = (await self.session.execute(statement)).all()
        return [ShowcaseRow(row[0], row[1], row[2]) for row in rows]

    async def tags_for(self, system_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
        if not system_ids:
            return {}
        rows = await self.session.execute(
            select(DesignSystemTag.design_system_id, DesignSystemTag.tag)
            .where(DesignSystemTag.design_system_id.in_(list(system_ids)))
            .order_by(DesignSystemTag.tag)
        )
        tags: dict[uuid.UUID, list[str]] = {system_id: [] for system_id in system_ids}
        for system_id, tag in rows:
            tags[system_id].append(tag)
        return tags

    async def replace_tags(self, system_id: uuid.UUID, tags: Sequence[str]) -> None:
        await self.session.execute(
            delete(DesignSystemTag).where(DesignSystemTag.design_system_id == system_id)
        )
        self.session.add_all(
            DesignSystemTag(design_system_id=system_id, tag=tag) for tag in dict.fromkeys(tags)
        )
        await self.session.flush()

    async def list_for_user(self, user_id: uuid.UUID) -> list[DesignSystem]:
        return list(
            await self.session.scalars(
                select(DesignSystem).where(DesignSystem.user_id == user_id).order_by(DesignSystem.created_at)
            )
        )

    async def delete_for_user(self, user_id: uuid.UUID) -> None:
        owned = select(DesignSystem.id).where(DesignSystem.user_id == user_id)
        await self.session.execute(delete(DesignSystemTag).where(DesignSystemTag.design_system_id.in_(owned)))
        await self.session.execute(delete(DesignSystem).where(DesignSystem.user_id == user_id))

    async def delete(self, system: DesignSystem) -> None:
        await self.session.execute(
            delete(DesignSystemTag).where(DesignSystemTag.design_system_id == system.id)
        )
        await self.session.delete(system)
        await self.session.flush()


def _showcased() -> ColumnElement[bool]:
    return and_(
        DesignSystem.is_public == true(),
        DesignSystem.shared_at.is_not(None),
        User.is_active == true(),
        User.erased_at.is_(None),
    )
