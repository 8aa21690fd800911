"""Where images live: one small interface, a local directory or an S3-compatible bucket.

Workers and the API exchange storage *keys*; URLs are only made for browsers. `key_for_url` maps a URL
back to a key only when it is one this storage issued, so a client-supplied URL is never fetched.
"""

from __future__ import annotations

import os
import re
import posixpath
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit

UPLOAD_PREFIX = "temp-uploads/"
JOB_PREFIX = "jobs/"  # what a job owns (its swatch): outside the expiring upload prefix
MISSING_CODES = ("404", "NoSuchKey", "NotFound")  # what S3, R2 and MinIO answer for an absent key
# Error codes that mean "not now" rather than "no" (throttling, a request the server gave up waiting for),
# which S3 and compatible stores may send with a 4xx status.
TRANSIENT_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                             "TooManyRequestsException", "RequestThrottled", "RequestTimeout"})
MAX_NAME_BYTES = 255  # a file name's limit on common filesystems


class StorageError(Exception):
    """A key is invalid or an object cannot be read or written. Raised as itself, it is a refusal (an
    invalid key, access denied, no such bucket): asking again gets the same answer."""


class ObjectMissing(StorageError):
    """The object is not there (deleted, expired, never written): asking again will not bring it back."""


class StorageUnavailable(StorageError):
    """The store did not answer properly (a 5xx, a timeout, a refused connection): worth asking again."""


def validate_key(key: str) -> str:
    """Refuse keys that could escape the storage root or confuse URL mapping, and names no filesystem
    holds (a part over 255 bytes), so a client's URL can never make a lookup fail instead of miss."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise StorageError(f"invalid storage key: {key!r}")
    parts = key.split("/")
    if (any(part in ("", ".", "..") or len(part.encode()) > MAX_NAME_BYTES for part in parts)
            or posixpath.normpath(key) != key):
        raise StorageError(f"invalid storage key: {key!r}")
    return key


VERSION_QUERY = re.compile(r"v=[0-9]{1,12}")


def key_under_base(url: str, base_url: str) -> str | None:
    """The key of `url` if it is `base_url` + "/" + a quoted valid key, else None. A `v=<n>` query (a
    version that makes a replaced object's URL new to every cache) is the only query allowed."""
    base = urlsplit(base_url.rstrip("/") + "/")
    parts = urlsplit(url)
    if (parts.scheme, parts.netloc) != (base.scheme, base.netloc) or parts.fragment:
        return None
    if parts.query and not VERSION_QUERY.fullmatch(parts.query):
        return None
    if not parts.path.startswith(base.path):
        return None
    try:
        return validate_key(unquote(parts.path[len(base.path):]))
    except StorageError:
        return None


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> str: ...
    def get(self, key: str) -> bytes: ...
    def copy(self, source: str, target: str) -> None: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def modified_at(self, key: str) -> datetime | None: ...
    def url_for(self, key: str) -> str: ...
    def key_for_url(self, url: str) -> str | None: ...
    def delete_older_than(self, prefix: str, max_age_seconds: float) -> int: ...
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
        """Write atomically (temp file + rename) so a reader never sees half an image. A filesystem that
        fails the write is `StorageUnavailable`, as it is for a read."""
        path = self.path_for(key)
        try:
            self._write(path, data)
        except OSError as exc:
            raise StorageUnavailable(f"cannot write {key!r}: {exc.strerror}") from exc
        return self.url_for(key)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        except FileNotFoundError:  # a delete removed the folder it had just emptied, between the two: again
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self.path_for(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectMissing(f"no object {key!r}") from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot read {key!r}: {exc.strerror}") from exc

    def copy(self, source: str, target: str) -> None:
        data = self.get(source)
        self.put(target, data, "")

    def delete(self, key: str) -> None:
        """Delete the file, and the folders it leaves empty (a job's result folder once its images aged
        out), so folders do not pile up where a bucket would have none."""
        path = self.path_for(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot delete {key!r}: {exc.strerror}") from exc
        for folder in path.parents:
            if folder == self.root:
                break
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone): the folders above are not empty either
                break

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def modified_at(self, key: str) -> datetime | None:
        try:
            return datetime.fromtimestamp(self.path_for(key).stat().st_mtime, timezone.utc)
        except FileNotFoundError:
            return None

    def url_for(self, key: str) -> str:
        return f"{self.public_base_url}/{quote(validate_key(key))}"

    def key_for_url(self, url: str) -> str | None:
        return key_under_base(url, self.public_base_url)

    def delete_older_than(self, prefix: str, max_age_seconds: float) -> int:
        """The local stand-in for a bucket lifecycle rule (uploads expire after 24 h)."""
        folder = self.path_for(prefix.rstrip("/"))
        if not folder.is_dir():
            return 0
        cutoff, removed = time.time() - max_age_seconds, 0
        for path in folder.iterdir():
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"{self.root} is not writable")


class S3Storage:
    """An S3-compatible bucket through boto3: AWS S3, Cloudflare R2 or MinIO via `endpoint_url`.

    URLs are `public_base_url/key` when the bucket is served publicly (an R2 public bucket or custom
    domain, a CDN), otherwise presigned GET URLs valid for `presign_seconds`.
    """

    LIFECYCLE_RULE_ID = "sastre-expire-temp-uploads"

    def __init__(self, bucket: str, endpoint_url: str | None = None, region: str | None = None,
                 public_base_url: str | None = None, access_key_id: str | None = None,
                 secret_access_key: str | None = None, presign_seconds: int = 3600) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.presign_seconds = presign_seconds
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region, aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                          retries={"max_attempts": 3, "mode": "standard"}),
        )

    def put(self, key: str, data: bytes, content_type: str) -> str:
        validate_key(key)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except _s3_errors() as exc:
            raise _s3_failure(exc, f"cannot write {key!r}") from exc
        return self.url_for(key)

    def get(self, key: str) -> bytes:
        """The object's bytes; `ObjectMissing` only when the bucket says so (404)."""
        validate_key(key)
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except _s3_errors() as exc:
            raise _s3_failure(exc, f"cannot read {key!r}", missing=key) from exc

    def copy(self, source: str, target: str) -> None:
        """A server-side copy (the bytes never leave the bucket); the content type goes with them."""
        validate_key(source)
        validate_key(target)
        try:
            self.client.copy_object(Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": source})
        except _s3_errors() as exc:
            raise _s3_failure(exc, f"cannot copy {source!r}", missing=source) from exc

    def delete(self, key: str) -> None:
        validate_key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except _s3_errors() as exc:
            raise _s3_failure(exc, f"cannot delete {key!r}") from exc

    def _head(self, key: str) -> dict | None:
        validate_key(key)
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except _s3_errors() as exc:
            failure = _s3_failure(exc, f"cannot stat {key!r}", missing=key)
            if isinstance(failure, ObjectMissing):
                return None
            raise failure from exc

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def modified_at(self, key: str) -> datetime | None:
        head = self._head(key)
        return head["LastModified"] if head else None

    def url_for(self, key: str) -> str:
        if self.public_base_url:
            return f"{self.public_base_url}/{quote(validate_key(key))}"
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": validate_key(key)}, ExpiresIn=self.presign_seconds
        )

    def key_for_url(self, url: str) -> str | None:
        if self.public_base_url:
            return key_under_base(url, self.public_base_url)
        # Presigned URLs (path style): <endpoint>/<bucket>/<key>?X-Amz-...; the signature is not ours to
        # check here, the key only has to be one of this bucket's.
        endpoint = self.client.meta.endpoint_url.rstrip("/")
        return key_under_base(url.split("?", 1)[0], f"{endpoint}/{self.bucket}")

    def ensure_upload_expiry(self, prefix: str = UPLOAD_PREFIX, days: int = 1) -> None:
        """Make sure the bucket deletes uploads after `days`, keeping any other lifecycle rules."""
        from botocore.exceptions import ClientError

        try:
            rules = self.client.get_bucket_lifecycle_configuration(Bucket=self.bucket)["Rules"]
        except _s3_errors() as exc:
            if not (isinstance(exc, ClientError) and _code(exc) == "NoSuchLifecycleConfiguration"):
                raise _s3_failure(exc, "cannot read lifecycle rules") from exc
            rules = []
        ours = {"ID": self.LIFECYCLE_RULE_ID, "Filter": {"Prefix": prefix}, "Status": "Enabled",
                "Expiration": {"Days": days}}
        if ours in rules:
            return
        rules = [rule for rule in rules if rule.get("ID") != self.LIFECYCLE_RULE_ID] + [ours]
        try:
            self.client.put_bucket_lifecycle_configuration(Bucket=self.bucket, LifecycleConfiguration={"Rules": rules})
        except _s3_errors() as exc:
            raise _s3_failure(exc, "cannot set the upload expiry rule") from exc

    def delete_older_than(self, prefix: str, max_age_seconds: float) -> int:
        """Nothing to do: the bucket's lifecycle rule expires uploads."""
        return 0

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except _s3_errors() as exc:
            raise _s3_failure(exc, f"bucket {self.bucket!r} unreachable") from exc


def _s3_errors() -> tuple[type[Exception], ...]:
    """What a boto3 call raises when the store fails it: the bucket's answer (`ClientError`), botocore's
    own errors, and what a body read can raise beneath them (urllib3's, the socket's)."""
    from botocore.exceptions import BotoCoreError, ClientError
    from urllib3.exceptions import HTTPError

    return (ClientError, BotoCoreError, HTTPError, OSError)


def _code(exc: Exception) -> str | None:
    return exc.response.get("Error", {}).get("Code")


def _s3_failure(exc: Exception, message: str, *, missing: str | None = None) -> StorageError:
    """A boto3 failure as this module's errors, by whether asking again can help.

    The bucket's "no such key" for `missing` is `ObjectMissing`. A 5xx, a 429, throttling, or no proper
    answer at all (a refused or dropped connection, a timeout, a body cut off) is `StorageUnavailable`.
    Any other 4xx (access denied, no such bucket, a bad request) and a client that cannot even send the
    request (no credentials, a bad parameter) is a plain `StorageError`: it would be refused again.
    """
    from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError, IncompleteReadError

    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if missing is not None and _code(exc) in MISSING_CODES:
            return ObjectMissing(f"no object {missing!r}")
        if status is not None and 400 <= status < 500 and status != 429 and _code(exc) not in TRANSIENT_CODES:
            return StorageError(f"{message}: {exc}")
        return StorageUnavailable(f"{message}: {exc}")
    if isinstance(exc, (ConnectionError, HTTPClientError, IncompleteReadError)) or not isinstance(exc, BotoCoreError):
        return StorageUnavailable(f"{message}: {type(exc).__name__}: {exc}")
    return StorageError(f"{message}: {type(exc).__name__}: {exc}")


def open_storage(config: dict) -> Storage:
    """Build the backend described by a settings-derived dict (see Settings.storage_config)."""
    options = {k: v for k, v in config.items() if k != "backend"}
    if config["backend"] == "local":
        return LocalStorage(**options)
    if config["backend"] == "s3":
        return S3Storage(**options)
    raise ValueError(f"unknown storage backend {config['backend']!r}")
