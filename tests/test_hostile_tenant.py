"""What a tenant who may only create ModelOptimizations and write to their own storage can put in
front of kompress (docs/security.md, "Findings"): each test carries the proof of a finding and
fails on the code before its fix."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest

from kompress_jobs.errors import StoreError
from kompress_jobs.layout import local_path
from kompress_jobs.store import LocalStore, fetch_directory, fetch_input

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("crafted", ["../../escaped.txt", "/abs/escaped.txt", "sub//escaped.txt", "./x/../../../escaped.txt"])
def test_s3_keys_that_leave_the_folder_are_never_written_outside_it(s3_endpoint, tmp_path, crafted):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.put_object(Bucket="models", Key="team-a/ckpt/config.json", Body=b"{}")
    client.put_object(Bucket="models", Key=f"team-a/ckpt/{crafted}", Body=b"planted")
    assert f"team-a/ckpt/{crafted}" in [o["Key"] for o in client.list_objects_v2(Bucket="models")["Contents"]]
    scratch = tmp_path / "scratch" / "deep" / "er"
    scratch.mkdir(parents=True)

    with pytest.raises(StoreError, match=r"s3://models/team-a/ckpt: object .* leaves its folder"):
        fetch_directory("s3://models/team-a/ckpt", scratch, s3_endpoint)
    planted = [p for p in tmp_path.rglob("*") if p.is_file()] + list(Path("/abs").glob("escaped.txt"))
    assert planted == [], "nothing of the crafted input was written, inside or outside the scratch folder"


def test_a_folder_marker_key_is_skipped_and_the_checkpoint_downloads(s3_endpoint, tmp_path):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.put_object(Bucket="models", Key="ckpt/", Body=b"")  # what a console's "create folder" leaves
    client.put_object(Bucket="models", Key="ckpt/config.json", Body=b"{}")
    client.put_object(Bucket="models", Key="ckpt/sub/vocab.txt", Body=b"a")
    folder = fetch_directory("s3://models/ckpt/", tmp_path, s3_endpoint)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == ["config.json", "sub/vocab.txt"]


@pytest.mark.parametrize("uri", ["s3://models/a/..", "s3://models/"])
def test_an_object_uri_without_a_usable_name_is_refused(s3_endpoint, tmp_path, uri):
    with pytest.raises(StoreError, match="the object name"):
        fetch_input(uri, tmp_path, s3_endpoint)


def test_a_download_through_a_symbolic_link_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "folder"
    folder.mkdir()
    os.symlink(outside, folder / "link")
    with pytest.raises(StoreError, match="symbolic link"):
        local_path(folder, "link/file.bin", "object")
    store = LocalStore(folder)
    (tmp_path / "payload").write_bytes(b"x")
    with pytest.raises(StoreError, match="symbolic link"):
        store.put(tmp_path / "payload", "link/file.bin")
    assert list(outside.iterdir()) == []
