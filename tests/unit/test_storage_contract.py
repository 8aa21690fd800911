"""One contract, both backends: the local directory and S3 (boto3 against moto on 127.0.0.1)."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone

import json

import httpx
import pytest

from deployments.storage import UPLOAD_PREFIX, LocalStorage, ObjectMissing, S3Storage, StorageError, StorageUnavailable
from serve_app.launcher import free_port
from tests.storage_faults import FaultProxy


def _s3(s3_server, public: bool) -> S3Storage:
    bucket = s3_server.new_bucket()
    if public:  # like an R2 bucket with public access, or S3 behind a public-read policy
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",
                  "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}]}
        s3_server.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    return S3Storage(bucket, endpoint_url=s3_server.endpoint_url, region="us-east-1",
                     public_base_url=f"{s3_server.endpoint_url}/{bucket}" if public else None,
                     access_key_id="testing", secret_access_key="testing")


@pytest.fixture(params=["local", "s3-public", "s3-presigned"])
def storage(request, tmp_path, s3_server):
    if request.param == "local":
        return LocalStorage(tmp_path, "http://127.0.0.1:8000/media")
    return _s3(s3_server, public=request.param == "s3-public")


@pytest.fixture(params=["s3-public", "s3-presigned"])
def s3_storage(request, s3_server) -> S3Storage:
    return _s3(s3_server, public=request.param == "s3-public")


def test_put_get_exists_and_age(storage):
    assert not storage.exists("generated/f/c/run/recto.jpg")
    assert storage.modified_at("generated/f/c/run/recto.jpg") is None
    storage.put("generated/f/c/run/recto.jpg", b"\xff\xd8jpeg", "image/jpeg")
    assert storage.get("generated/f/c/run/recto.jpg") == b"\xff\xd8jpeg"
    assert storage.exists("generated/f/c/run/recto.jpg")
    age = datetime.now(timezone.utc) - storage.modified_at("generated/f/c/run/recto.jpg")
    assert timedelta(seconds=-5) < age < timedelta(minutes=1)
    storage.put("generated/f/c/run/recto.jpg", b"second", "image/jpeg")  # a retry overwrites in place
    assert storage.get("generated/f/c/run/recto.jpg") == b"second"


def test_missing_object_raises_storage_error(storage):
    with pytest.raises(StorageError):
        storage.get("temp-uploads/nothing.png")


def test_a_missing_object_is_object_missing(storage):
    """The one failure that means "gone": a swatch read falls back on it instead of retrying."""
    with pytest.raises(ObjectMissing):
        storage.get("temp-uploads/nothing.png")


@pytest.mark.parametrize("fault,operation", [("connection refused", "get"), ("connection refused", "put"),
                                             ("fail-reads", "get"), ("throttle-reads", "get"), ("fail-writes", "put")])
def test_a_store_that_does_not_answer_is_unavailable_not_missing(s3_server, fault, operation):
    """No answer, a 5xx or throttling: worth asking again (a cut attempt that meets it is retried)."""
    bucket = s3_server.new_bucket()
    if fault == "connection refused":
        endpoint, proxy = f"http://127.0.0.1:{free_port()}", None
    else:
        proxy = FaultProxy(int(s3_server.endpoint_url.rsplit(":", 1)[1]))
        proxy.set_mode(fault)
        endpoint = proxy.endpoint_url
    storage = S3Storage(bucket, endpoint_url=endpoint, region="us-east-1", access_key_id="testing",
                        secret_access_key="testing")
    try:
        with pytest.raises(StorageUnavailable) as raised:
            if operation == "get":
                storage.get("temp-uploads/x.png")
            else:
                storage.put("generated/f/c/run/recto.jpg", b"\xff\xd8jpeg", "image/jpeg")
    finally:
        if proxy:
            proxy.close()
    assert not isinstance(raised.value, ObjectMissing)


def test_a_refusal_is_a_plain_storage_error_not_unavailable(s3_server):
    """A 4xx other than "no such key" (here: no such bucket) is the store's answer, not a hiccup: asking
    again gets the same, so it is neither `StorageUnavailable` (retried) nor `ObjectMissing`."""
    storage = S3Storage("no-such-bucket", endpoint_url=s3_server.endpoint_url, region="us-east-1",
                        access_key_id="testing", secret_access_key="testing")
    for call in (lambda: storage.get("temp-uploads/x.png"), lambda: storage.put("temp-uploads/x.png", b"x", "image/png"),
                 lambda: storage.copy("temp-uploads/x.png", "jobs/j/swatch.png")):
        with pytest.raises(StorageError) as raised:
            call()
        assert type(raised.value) is StorageError, raised.value
        assert "NoSuchBucket" in str(raised.value)


def test_copy_keeps_the_bytes_under_a_new_key_and_delete_removes_it(storage):
    storage.put(UPLOAD_PREFIX + "s.png", b"swatch", "image/png")
    storage.copy(UPLOAD_PREFIX + "s.png", "jobs/j1/swatch.png")
    assert storage.get("jobs/j1/swatch.png") == b"swatch"
    if isinstance(storage, S3Storage):
        head = storage.client.head_object(Bucket=storage.bucket, Key="jobs/j1/swatch.png")
        assert head["ContentType"] == "image/png"
    with pytest.raises(ObjectMissing):
        storage.copy(UPLOAD_PREFIX + "gone.png", "jobs/j2/swatch.png")
    storage.delete("jobs/j1/swatch.png")
    storage.delete("jobs/j1/swatch.png")  # deleting what is gone is not an error
    assert not storage.exists("jobs/j1/swatch.png") and storage.exists(UPLOAD_PREFIX + "s.png")


@pytest.mark.parametrize("key", ["../x", "a/../b", "/abs", "a//b", "", "temp-uploads/" + "x" * 252 + ".png"])
def test_invalid_keys_are_refused(storage, key):
    with pytest.raises(StorageError):
        storage.put(key, b"x", "text/plain")


def test_urls_map_back_to_keys_and_nothing_else(storage):
    key = "SASTRE 2026-27/095T-0121.png"
    url = storage.put(key, b"png", "image/png")
    assert url == storage.url_for(key)
    assert storage.key_for_url(url) == key
    for foreign in ["http://evil.example/SASTRE%202026-27/095T-0121.png", "file:///etc/passwd",
                    "http://169.254.169.254/latest/meta-data/", url.replace("095T-0121", "..%2F..%2Fetc")]:
        assert storage.key_for_url(foreign) is None, foreign


def test_s3_objects_have_content_types_and_urls_serve_them(s3_storage):
    """(Local objects are served by the ingress under /media: the integration tests fetch those.)"""
    storage = s3_storage
    url = storage.put("generated/a/b/c/recto.jpg", b"\xff\xd8bytes", "image/jpeg")
    head = storage.client.head_object(Bucket=storage.bucket, Key="generated/a/b/c/recto.jpg")
    assert head["ContentType"] == "image/jpeg"
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == b"\xff\xd8bytes"
    if storage.public_base_url is None:
        assert "X-Amz-Signature=" in url


def test_uploads_expire(storage):
    storage.put(UPLOAD_PREFIX + "old.png", b"old", "image/png")
    storage.put(UPLOAD_PREFIX + "new.png", b"new", "image/png")
    if isinstance(storage, LocalStorage):
        old = time.time() - 25 * 3600
        os.utime(storage.path_for(UPLOAD_PREFIX + "old.png"), (old, old))
        assert storage.delete_older_than(UPLOAD_PREFIX, 24 * 3600) == 1
        assert not storage.exists(UPLOAD_PREFIX + "old.png") and storage.exists(UPLOAD_PREFIX + "new.png")
        return
    other = {"ID": "keep-me", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 30}}
    storage.client.put_bucket_lifecycle_configuration(Bucket=storage.bucket, LifecycleConfiguration={"Rules": [other]})
    storage.ensure_upload_expiry()
    storage.ensure_upload_expiry()  # idempotent
    rules = storage.client.get_bucket_lifecycle_configuration(Bucket=storage.bucket)["Rules"]
    ours = [r for r in rules if r["ID"] == S3Storage.LIFECYCLE_RULE_ID]
    assert len(ours) == 1 and ours[0]["Expiration"] == {"Days": 1}
    assert ours[0]["Filter"] == {"Prefix": UPLOAD_PREFIX}
    assert any(r["ID"] == "keep-me" for r in rules)


def test_health_check(storage, s3_server):
    storage.check()
    if isinstance(storage, S3Storage):
        with pytest.raises(StorageError):
            S3Storage("no-such-bucket", endpoint_url=s3_server.endpoint_url, region="us-east-1",
                      access_key_id="testing", secret_access_key="testing").check()
