"""Artifacts: atomic completion, skip when up to date, --force, reruns on changed config or input."""

from __future__ import annotations

import json
import os

import pytest

from pipelines.lineage import Artifact, input_hash, read_manifest


def make(path, config, inputs=()):
    return Artifact(path, kind="test", stage="unit", config=config, inputs=inputs)


def write(art, payload="x"):
    with art.writing() as tmp:
        (tmp / "data.txt").write_text(payload)
        art.counts = {"input": 1, "kept": 1}


def test_complete_artifact_has_manifest_fields(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text("hello")
    art = make(tmp_path / "out", {"a": 1, "output_dir": "ignored"}, inputs=[raw])
    write(art)
    manifest = read_manifest(tmp_path / "out")
    for key in (
        "kind",
        "name",
        "stage",
        "config",
        "config_hash",
        "inputs",
        "counts",
        "code_version",
        "packages",
        "created_at",
        "duration_s",
        "status",
        "hash",
    ):
        assert key in manifest, key
    assert manifest["status"] == "complete"
    assert manifest["inputs"] == [{"path": str(raw), "hash": input_hash(raw)}]
    assert (tmp_path / "out" / "data.txt").read_text() == "x"
    assert not (tmp_path / ".out.partial").exists()


def test_interrupted_artifact_is_not_complete_and_resumes(tmp_path):
    art = make(tmp_path / "out", {"a": 1})
    with pytest.raises(RuntimeError), art.writing() as tmp:
        (tmp / "piece-0").write_text("done")
        raise RuntimeError("killed")
    assert read_manifest(tmp_path / "out") is None
    assert not make(tmp_path / "out", {"a": 1}).up_to_date()
    # Same hash: the finished piece is still there to resume from.
    again = make(tmp_path / "out", {"a": 1})
    with again.writing() as tmp:
        assert (tmp / "piece-0").read_text() == "done"
    # Different config: the stale partial work is wiped, never mixed in.
    with pytest.raises(RuntimeError), make(tmp_path / "other", {"a": 1}).writing() as tmp:
        (tmp / "piece-0").write_text("stale")
        raise RuntimeError
    with make(tmp_path / "other", {"a": 2}).writing() as tmp:
        assert not (tmp / "piece-0").exists()


def test_skip_force_and_rerun_rules(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text("hello")
    write(make(tmp_path / "out", {"a": 1, "output_dir": "x"}, [raw]))
    # Same config (output_dir and force do not count) and same input: up to date.
    assert make(tmp_path / "out", {"a": 1, "output_dir": "y", "force": True}, [raw]).up_to_date()
    # Changed config: rerun.
    assert not make(tmp_path / "out", {"a": 2}, [raw]).up_to_date()
    # Changed input (size/mtime): rerun.
    raw.write_text("hello, world")
    os.utime(raw, ns=(1, 1))
    stale = make(tmp_path / "out", {"a": 1}, [raw])
    assert not stale.up_to_date()
    # A rerun (or --force) replaces the old artifact atomically.
    write(stale, payload="new")
    assert stale.up_to_date()
    assert (tmp_path / "out" / "data.txt").read_text() == "new"


def test_upstream_artifact_contributes_its_manifest_hash(tmp_path):
    up = make(tmp_path / "up", {"a": 1})
    write(up)
    assert input_hash(tmp_path / "up") == json.loads((tmp_path / "up" / "manifest.json").read_text())["hash"]
    down = make(tmp_path / "down", {"b": 1}, [tmp_path / "up"])
    write(down)
    assert down.up_to_date()
    write(make(tmp_path / "up", {"a": 2}))  # upstream changed: downstream is stale
    assert not make(tmp_path / "down", {"b": 1}, [tmp_path / "up"]).up_to_date()


def test_missing_input_fails_with_its_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        make(tmp_path / "out", {}, [tmp_path / "nope.jsonl"])


def test_code_version_is_part_of_the_hash(tmp_path, monkeypatch):
    """After an upgrade that may change outputs, a stage reruns without --force."""
    from pipelines import lineage

    raw = tmp_path / "raw.jsonl"
    raw.write_text("{}\n")
    monkeypatch.setattr(lineage, "code_version", lambda: "nanoforge==1.0")
    old = Artifact(tmp_path / "out", kind="documents", stage="curate", config={"a": 1}, inputs=[raw])
    with old.writing():
        pass
    assert read_manifest(tmp_path / "out")["code_version"] == "nanoforge==1.0"
    monkeypatch.setattr(lineage, "code_version", lambda: "nanoforge==1.1")
    new = Artifact(tmp_path / "out", kind="documents", stage="curate", config={"a": 1}, inputs=[raw])
    assert new.hash != old.hash and not new.up_to_date()


def test_remote_inputs_are_hashed_by_size_and_version_not_just_their_url():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/nf-lineage/raw/a.jsonl", b'{"text": "one"}\n')
    fs.pipe("/nf-lineage/raw/b.jsonl", b'{"text": "two"}\n')
    file_before, prefix_before = input_hash("memory://nf-lineage/raw/a.jsonl"), input_hash("memory://nf-lineage/raw")
    glob_before = input_hash("memory://nf-lineage/raw/*.jsonl")
    fs.pipe("/nf-lineage/raw/a.jsonl", b'{"text": "one, edited"}\n')  # same URL, new content
    assert input_hash("memory://nf-lineage/raw/a.jsonl") != file_before
    assert input_hash("memory://nf-lineage/raw") != prefix_before
    assert input_hash("memory://nf-lineage/raw/*.jsonl") != glob_before
    with pytest.raises(FileNotFoundError, match="input not found"):
        input_hash("memory://nf-lineage/raw/*.parquet")
    fs.rm("/nf-lineage", recursive=True)
