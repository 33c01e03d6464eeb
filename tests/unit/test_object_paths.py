"""Object-store keys become local paths only when they stay inside the download
directory, and credential values never survive into an error message."""

import pytest

from modelops_jobs import objectstore, transfer
from modelops_jobs.errors import PermanentError

LOC = objectstore.Location("s3", "bucket", "models/opt")


@pytest.mark.parametrize(
    "key,rel",
    [
        ("models/opt/config.json", "config.json"),
        ("models/opt/shards/model-00001.safetensors", "shards/model-00001.safetensors"),
        ("models/opt/../../etc/passwd", None),
        ("models/opt/a//b", None),
        ("models/opt/./x", None),
        ("models/opt/a\\..\\b", None),
    ],
    ids=["file", "nested", "dot-dot", "empty-segment", "dot", "backslash"],
)
def test_keys_map_inside_the_prefix(key: str, rel: str | None) -> None:
    if rel is None:
        with pytest.raises(PermanentError) as exc:
            transfer._relative(LOC, key)
        assert exc.value.reason == "InvalidData"
    else:
        assert transfer._relative(LOC, key) == rel


@pytest.mark.parametrize(
    "uri,bucket,key",
    [
        ("s3://bucket-1/a/b/", "bucket-1", "a/b"),
        ("s3://bucket-1", "bucket-1", ""),
        ("gs://bucket_2/x", "bucket_2", "x"),
    ],
    ids=["s3-prefix", "s3-bucket-root", "gs"],
)
def test_locations(uri: str, bucket: str, key: str) -> None:
    loc = objectstore.location(uri)
    assert (loc.bucket, loc.key) == (bucket, key)
    assert loc.child("f") == (f"{key}/f" if key else "f")


@pytest.mark.parametrize("uri", ["pvc://claim/x", "file:///x", "s3://B/x"], ids=str)
def test_not_an_object_store_uri(uri: str) -> None:
    with pytest.raises(PermanentError) as exc:
        objectstore.location(uri)
    assert exc.value.reason == "InvalidURI"


def test_credentials_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    text = objectstore.redact("denied for AKIDEXAMPLE signed with very-secret-value")
    assert "very-secret-value" not in text and "AKIDEXAMPLE" not in text


def test_upload_part_size_has_the_s3_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(objectstore.PART_SIZE_ENV, "1024")
    assert objectstore.part_size() == 5 * 1024 * 1024
