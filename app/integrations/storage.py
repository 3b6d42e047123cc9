"""Object storage behind one Protocol: `local` (files under the data dir, served by the API through
expiring HMAC-signed URLs) and `s3` (boto3 in a worker thread, presigned URLs, any S3-compatible
endpoint). Database rows hold keys, never bytes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

# Keys are ours ("users/<uuid>/<uuid>.png"): a strict alphabet keeps them out of path-traversal land.
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,511}$")


class StorageError(Exception):
    pass


class ObjectNotFound(StorageError):
    pass


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or ".." in key or "//" in key:
        raise StorageError(f"invalid storage key {key!r}")
    return key


class Storage(Protocol):
    name: str

    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def get(self, key: str) -> bytes: ...

    async def delete(self, key: str) -> None: ...

    async def url(self, key: str, expires_in: int, download_name: str | None = None) -> str: ...


class LocalStorage:
    name = "local"

    def __init__(self, root: Path, *, public_base_url: str, signing_key: bytes) -> None:
        self.root = root.resolve()
        self._base = public_base_url.rstrip("/")
        self._signing_key = signing_key

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise StorageError("key escapes the storage root")
        return path

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._write, self._path(key), data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        # Written to a temporary file then renamed: a reader never sees half an object.
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
                temporary = handle.name
                handle.write(data)
        except OSError as exc:
            raise StorageError(f"cannot write {path.name}: {exc.strerror}") from exc
        try:
            os.replace(temporary, path)
        except OSError as exc:
            Path(temporary).unlink(missing_ok=True)
            raise StorageError(f"cannot write {path.name}: {exc.strerror}") from exc

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(path.unlink, missing_ok=True)

    async def url(self, key: str, expires_in: int, download_name: str | None = None) -> str:
        expires = int(time.time()) + expires_in
        query = {"expires": str(expires), "signature": self.signature(check_key(key), expires)}
        return f"{self._base}/api/v1/files/{quote(key)}?{urlencode(query)}"

    def signature(self, key: str, expires: int) -> str:
        return hmac.new(self._signing_key, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def verify(self, key: str, expires: int, signature: str) -> bool:
        # Compared as bytes: compare_digest refuses non-ASCII str, which a client controls here.
        expected = self.signature(key, expires).encode()
        return expires >= time.time() and hmac.compare_digest(expected, signature.encode())


def s3_client(
    *,
    endpoint_url: str | None,
    region: str,
    access_key_id: str | None,
    secret_access_key: str | None,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
    max_attempts: int = 3,
) -> Any:
    """A boto3 S3 client with bounded timeouts and retries (storage and backups share it)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(
            signature_version="s3v4",
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        ),
    )


class S3Storage:
    name = "s3"

    def __init__(self, *, bucket: str, client: Any) -> None:
        self.bucket = bucket
        self._client = client

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await self._call(
            self._client.put_object,
            Bucket=self.bucket,
            Key=check_key(key),
            Body=data,
            ContentType=content_type,
        )

    async def get(self, key: str) -> bytes:
        def download(**kwargs: Any) -> bytes:
            # Read inside the guarded call: a connection lost mid-body is a StorageError too.
            body: bytes = self._client.get_object(**kwargs)["Body"].read()
            return body

        data: bytes = await self._call(download, Bucket=self.bucket, Key=check_key(key))
        return data

    async def delete(self, key: str) -> None:
        await self._call(self._client.delete_object, Bucket=self.bucket, Key=check_key(key))

    async def url(self, key: str, expires_in: int, download_name: str | None = None) -> str:
        params: dict[str, str] = {"Bucket": self.bucket, "Key": check_key(key)}
        if download_name:
            params["ResponseContentDisposition"] = f'inline; filename="{download_name}"'
        url: str = await asyncio.to_thread(
            self._client.generate_presigned_url, "get_object", Params=params, ExpiresIn=expires_in
        )
        return url

    async def presigned_put(self, key: str, content_type: str, expires_in: int) -> str:
        url: str = await asyncio.to_thread(
            self._client.generate_presigned_url,
            "put_object",
            Params={"Bucket": self.bucket, "Key": check_key(key), "ContentType": content_type},
            ExpiresIn=expires_in,
        )
        return url

    async def _call(self, method: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(method, **kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectNotFound(kwargs.get("Key", "")) from exc
            raise StorageError(f"S3 {exc.response.get('Error', {}).get('Code')}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 unreachable: {type(exc).__name__}") from exc
