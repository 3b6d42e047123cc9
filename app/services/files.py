from __future__ import annotations

import mimetypes

from app.container import Container
from app.integrations.storage import LocalStorage, ObjectNotFound, StorageError

_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
}


async def read_signed(ctx: Container, key: str, expires: int, signature: str) -> tuple[bytes, str] | None:
    """The object behind a signed local URL, or None for a bad, expired or dangling link."""
    storage = ctx.storage
    if not isinstance(storage, LocalStorage):
        return None  # S3 hands out its own presigned URLs
    try:
        if not storage.verify(key, expires, signature):
            return None
        data = await storage.get(key)
    except (ObjectNotFound, StorageError):
        return None
    suffix = "." + key.rsplit(".", 1)[-1] if "." in key else ""
    return data, _TYPES.get(suffix) or mimetypes.guess_type(key)[0] or "application/octet-stream"
