"""Where images live: one small interface, a local-directory backend (S3 arrives with uploads).

Workers and the API exchange storage *keys*; URLs are only made for browsers. `key_for_url` maps a URL
back to a key only when it is one this storage issued, so a client-supplied URL is never fetched.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit


class StorageError(Exception):
    """A key is invalid or an object cannot be read or written."""


def validate_key(key: str) -> str:
    """Refuse keys that could escape the storage root or confuse URL mapping."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise StorageError(f"invalid storage key: {key!r}")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts) or posixpath.normpath(key) != key:
        raise StorageError(f"invalid storage key: {key!r}")
    return key


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> str: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def url_for(self, key: str) -> str: ...
    def key_for_url(self, url: str) -> str | None: ...
    def check(self) -> None: ...


class LocalStorage:
    """Objects as files under `root`; the ingress serves them at `public_base_url` (…/media)."""

    def __init__(self, root: str | os.PathLike, public_base_url: str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.public_base_url = public_base_url.rstrip("/")

    def path_for(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        if self.root not in path.parents:
            raise StorageError(f"invalid storage key: {key!r}")
        return path

    def put(self, key: str, data: bytes, content_type: str) -> str:
        """Write atomically (temp file + rename) so a reader never sees half an image."""
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.url_for(key)

    def get(self, key: str) -> bytes:
        try:
            return self.path_for(key).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {key!r}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def url_for(self, key: str) -> str:
        return f"{self.public_base_url}/{quote(validate_key(key))}"

    def key_for_url(self, url: str) -> str | None:
        base = urlsplit(self.public_base_url + "/")
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc) != (base.scheme, base.netloc) or parts.query or parts.fragment:
            return None
        if not parts.path.startswith(base.path):
            return None
        try:
            return validate_key(unquote(parts.path[len(base.path):]))
        except StorageError:
            return None

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"{self.root} is not writable")


def open_storage(config: dict) -> Storage:
    """Build the backend described by a settings-derived dict (see Settings.storage_config)."""
    if config["backend"] == "local":
        return LocalStorage(config["root"], config["public_base_url"])
    raise ValueError(f"unknown storage backend {config['backend']!r}")
