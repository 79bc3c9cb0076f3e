"""Artifacts: atomic completion, skip when up to date, --force, reruns on changed config or input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.core.artifacts import Artifact, OutputLockedError, UnsafeOutputError, input_hash, read_manifest


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
    from pipelines.core import artifacts

    raw = tmp_path / "raw.jsonl"
    raw.write_text("{}\n")
    monkeypatch.setattr(artifacts, "code_version", lambda: "nanoforge==1.0")
    old = Artifact(tmp_path / "out", kind="documents", stage="curate", config={"a": 1}, inputs=[raw])
    with old.writing():
        pass
    assert read_manifest(tmp_path / "out")["code_version"] == "nanoforge==1.0"
    monkeypatch.setattr(artifacts, "code_version", lambda: "nanoforge==1.1")
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


# --- issue 13 item 1: an output that is not ours is never replaced --------------------------------------------


def test_output_holding_user_files_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(UnsafeOutputError, match=r"not a nanoforge artifact.*notes\.txt"):
        write(make(out, {"a": 1}))
    assert (out / "notes.txt").read_text() == "my notes" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert not (tmp_path / ".data.partial").exists()
    # an empty directory and an older artifact are ours to fill or replace
    (tmp_path / "empty").mkdir()
    write(make(tmp_path / "empty", {"a": 1}))
    write(make(tmp_path / "empty", {"a": 2}), payload="new")
    assert (tmp_path / "empty" / "data.txt").read_text() == "new"


def test_output_equal_to_or_containing_an_input_is_refused(tmp_path):
    raw = tmp_path / "corpus" / "raw.jsonl"
    raw.parent.mkdir()
    raw.write_text('{"text": "hello"}\n')
    for out, given in (
        (tmp_path / "corpus", raw.parent),
        (tmp_path, raw),
        (tmp_path / "corpus", tmp_path / "corpus/*.jsonl"),
    ):
        with pytest.raises(UnsafeOutputError, match="is or contains the stage's input"):
            write(make(out, {"a": 1}, [given]))
    up = make(tmp_path / "up", {"a": 1})
    write(up)
    with pytest.raises(UnsafeOutputError, match="is or contains the stage's input"):  # rewriting an input artifact
        write(make(tmp_path / "up", {"a": 2}, [tmp_path / "up"]))
    assert raw.read_text() == '{"text": "hello"}\n' and read_manifest(tmp_path / "up")["config"] == {"a": 1}


# --- issue 13 item 2: one writer per output ------------------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from pipelines.core.artifacts import Artifact
out, ready, stop = map(Path, sys.argv[1:4])
art = Artifact(out, kind="test", stage="unit", config={"a": 1})
with art.writing() as tmp:
    ready.write_text("in")
    while not stop.exists():
        time.sleep(0.05)
"""


def test_second_writer_is_refused_naming_the_holder_and_stale_lock_is_taken_over(tmp_path, capsys):
    out, ready, stop = tmp_path / "out", tmp_path / "ready", tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(ready), str(stop)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "holder process did not start"
            time.sleep(0.05)
        with pytest.raises(OutputLockedError, match=rf"pid {holder.pid} on host {socket.gethostname()}"):
            write(make(out, {"a": 1}))
        assert (tmp_path / ".out.partial").is_dir()  # the holder's partial directory was not touched
    finally:
        stop.touch()
        assert holder.wait(timeout=60) == 0
    assert read_manifest(out) is not None and not (tmp_path / ".out.lock").exists()
    # a lock left by a process that died (SIGKILL leaves no chance to release it) is taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / ".out.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "started_at": "earlier"}))
    write(make(out, {"a": 2}), payload="second")
    assert "took over" in capsys.readouterr().out and (out / "data.txt").read_text() == "second"
    assert not lock.exists()
    # a lock held on another host cannot be checked from here: refused, never taken over
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started_at": "earlier"}))
    with pytest.raises(OutputLockedError, match="host elsewhere"):
        write(make(out, {"a": 3}))
