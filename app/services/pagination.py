"""Opaque keyset cursors: (created_at, id) of the last row of a page, base64-encoded."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime

from app.errors import BadRequest


class InvalidCursor(BadRequest):
    code = "invalid_cursor"
    default_detail = "The cursor is malformed; use the next_cursor of a previous page."


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, row_id = json.loads(raw)
        if not isinstance(created_at, str) or not isinstance(row_id, str):
            raise ValueError("cursor fields are strings")
        moment = datetime.fromisoformat(created_at)
        if moment.tzinfo is None:
            raise ValueError("naive")
        return moment.astimezone(UTC), uuid.UUID(row_id)
    except (binascii.Error, ValueError, TypeError, OverflowError) as exc:
        raise InvalidCursor() from exc
