"""Where backups are kept: a local folder or a prefix of an S3 bucket. A backup is a folder of files
named after its time; its manifest is written last, so a backup without one is incomplete and is
never listed, restored or counted by retention."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Protocol

MANIFEST = "manifest.json"


class BackupStore(Protocol):
    description: str

    def names(self) -> list[str]:
        """The complete backups, oldest first."""
        ...

    def save(self, name: str, folder: Path) -> None: ...

    def fetch(self, name: str, into: Path) -> Path:
        """A local folder holding the backup's files (downloaded into `into` when remote)."""
        ...

    def remove(self, name: str) -> None: ...


class DirectoryBackupStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = str(root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(path.name for path in self.root.iterdir() if (path / MANIFEST).is_file())

    def save(self, name: str, folder: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.root / f".{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(folder, partial)
        # A rename within one folder is atomic: a reader sees no backup or a complete one.
        partial.rename(self.root / name)

    def fetch(self, name: str, into: Path) -> Path:
        return self.root / name

    def remove(self, name: str) -> None:
        shutil.rmtree(self.root / name)


class S3BackupStore:
    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix if prefix.endswith("/") or not prefix else f"{prefix}/"
        self.description = f"s3://{bucket}/{self.prefix}"

    def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def names(self) -> list[str]:
        suffix = f"/{MANIFEST}"
        return sorted(
            key[len(self.prefix) : -len(suffix)]
            for key in self._keys(self.prefix)
            if key.endswith(suffix) and "/" not in key[len(self.prefix) : -len(suffix)]
        )

    def save(self, name: str, folder: Path) -> None:
        files = sorted(path for path in folder.iterdir() if path.is_file())
        # upload_file streams in parts; the manifest goes last so a cut-off upload stays incomplete.
        for path in sorted(files, key=lambda path: path.name == MANIFEST):
            self._client.upload_file(str(path), self.bucket, f"{self.prefix}{name}/{path.name}")

    def fetch(self, name: str, into: Path) -> Path:
        folder = into / name
        folder.mkdir(parents=True, exist_ok=True)
        for key in self._keys(f"{self.prefix}{name}/"):
            self._client.download_file(self.bucket, key, str(folder / key.rsplit("/", 1)[1]))
        return folder

    def remove(self, name: str) -> None:
        keys = self._keys(f"{self.prefix}{name}/")
        # The manifest first: a backup half-removed is incomplete, never a damaged "complete" one.
        for key in sorted(keys, key=lambda key: not key.endswith(MANIFEST)):
            self._client.delete_object(Bucket=self.bucket, Key=key)
