"""Replicate's Files API (providers.md §2b): an input handed to a model without a public URL of ours.

``POST /v1/files`` (multipart: ``content`` with the part's filename and type, ``filename``, ``type``,
``metadata`` as JSON text) → 201 file object; its ``urls.get`` (``https://api.replicate.com/v1/files/{id}``)
is what a model input takes: Replicate resolves it server-side. Uploaded files expire (about 24 h), so
upload right before the run that reads it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from app.integrations.images.base import EngineError, ProviderFile
from app.integrations.images.replicate._base import ReplicateBase, log

# Replicate caps a file name at 255 bytes.
_MAX_FILENAME_BYTES = 255


class FilesApi(ReplicateBase):
    async def upload_file(
        self,
        data: bytes,
        *,
        filename: str,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> ProviderFile:
        if len(filename.encode()) > _MAX_FILENAME_BYTES:
            raise ValueError("A Replicate file name is at most 255 bytes")
        body = await self._request(
            "POST",
            "/v1/files",
            files={
                "content": (filename, data, content_type),
                "filename": (None, filename, "text/plain"),
                "type": (None, content_type, "text/plain"),
                "metadata": (None, json.dumps(dict(metadata or {})), "application/json"),
            },
            expected=(200, 201),
        )
        file_id = body.get("id")
        urls = body.get("urls")
        url = urls.get("get") if isinstance(urls, dict) else None
        if not isinstance(file_id, str) or not file_id or not isinstance(url, str) or not url:
            raise EngineError(
                "provider_error", "Replicate answered a file upload without an id or URL.", retryable=True
            )
        size = body.get("size")
        log.info("replicate.file_uploaded", file_id=file_id, size_bytes=len(data), content_type=content_type)
        return ProviderFile(id=file_id, url=url, size=size if isinstance(size, int) else len(data), raw=body)
