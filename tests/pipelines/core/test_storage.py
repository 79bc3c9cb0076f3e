"""Storage as URLs: artifacts on a real S3 server (moto on loopback) commit with the manifest last, a prefix
without a manifest is absent, a rerun resumes, credentials never reach what is written."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipelines.core import storage
from pipelines.core.artifacts import Artifact, input_hash, read_manifest


def make(path, config, inputs=()):
    return Artifact(path, kind="test", stage="unit", config=config, inputs=inputs)


def test_local_and_remote_paths_read_and_write_alike(tmp_path, s3_prefix):
    for base in (str(tmp_path), s3_prefix):
        storage.makedirs(storage.join(base, "d"))
        storage.write_json({"a": 1}, storage.join(base, "d", "a.json"))
        storage.write_parquet(pa.table({"x": [1, 2, 3]}), storage.join(base, "d", "t.parquet"))
        assert storage.read_json(storage.join(base, "d", "a.json")) == {"a": 1}
        assert storage.read_table(storage.join(base, "d", "t.parquet")).num_rows == 3
        assert storage.parquet_metadata(storage.join(base, "d", "t.parquet")).num_rows == 3
        found = storage.glob(storage.join(base, "d", "*"))
        assert [storage.basename(f) for f in found] == ["a.json", "t.parquet"]
        assert found[0].startswith(base)  # full URLs back, usable as they are
        storage.remove(storage.join(base, "d"))
        assert not storage.exists(storage.join(base, "d", "a.json"))


def test_redact_drops_credentials_from_urls():
    assert storage.redact("s3://AKIA:sekrit@bucket/x") == "s3://bucket/x"
    assert storage.redact("https://host/f.jsonl?X-Amz-Signature=abc") == "https://host/f.jsonl"
    assert storage.redact("/local/path?odd") == "/local/path?odd"


def test_remote_artifact_commits_manifest_last_and_resumes(s3_prefix):
    out = storage.join(s3_prefix, "art")
    art = make(out, {"a": 1})
    with pytest.raises(RuntimeError), art.writing() as prefix:
        storage.write_text("part one", storage.join(prefix, "data", "one.txt"))
        assert read_manifest(out) is None  # data is there, the artifact is not
        raise RuntimeError("crash")
    assert read_manifest(out) is None and not art.up_to_date()  # a prefix without a manifest is absent
    with art.writing() as prefix:  # same hash: resumes with what the crashed run wrote
        assert storage.read_text(storage.join(prefix, "data", "one.txt")) == "part one"
        storage.write_text("part two", storage.join(prefix, "data", "two.txt"))
        art.counts = {"kept": 2}
    manifest = read_manifest(out)
    assert manifest["counts"] == {"kept": 2} and manifest["name"] == "art"
    assert make(out, {"a": 1}).up_to_date()
    assert not storage.exists(storage.join(out, ".lineage.json"))
    # a downstream stage sees the committed artifact's hash, like a local one
    assert input_hash(out) == manifest["hash"]
    # another config replaces it: the old data goes, nothing is mixed in
    other = make(out, {"a": 2})
    with other.writing() as prefix:
        assert not storage.exists(storage.join(prefix, "data", "one.txt"))
        storage.write_text("new", storage.join(prefix, "data", "new.txt"))
    assert [storage.basename(f) for f in storage.glob(storage.join(out, "data", "*"))] == ["new.txt"]


def test_remote_prefix_that_is_not_an_artifact_is_never_replaced(s3_prefix):
    storage.write_text("someone's data", storage.join(s3_prefix, "theirs", "file.txt"))
    with (
        pytest.raises(FileExistsError, match="not a nanoforge artifact"),
        make(storage.join(s3_prefix, "theirs"), {}).writing(),
    ):
        pass
    assert storage.read_text(storage.join(s3_prefix, "theirs", "file.txt")) == "someone's data"


def test_credentials_from_the_environment_never_reach_the_manifest(s3_prefix):
    import os

    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    upstream = storage.join(s3_prefix, "up")
    with make(upstream, {"a": 1}).writing() as prefix:
        storage.write_text("x", storage.join(prefix, "x.txt"))
    art = make(storage.join(s3_prefix, "down"), {"b": 1}, inputs=[upstream])
    with art.writing():
        pass
    text = storage.read_text(storage.join(s3_prefix, "down", "manifest.json"))
    assert secret not in text and "nanoforge-test-key" not in text


def test_a_file_that_is_not_parquet_is_an_error_naming_it(tmp_path):
    from pipelines.core.config import ConfigError

    bad = tmp_path / "part-00000.parquet"
    bad.write_text("not parquet\n")
    for read in (storage.read_table, storage.parquet_metadata):
        with pytest.raises(ConfigError, match=f"{bad}: not a readable Parquet file"):
            read(str(bad))
    with pytest.raises(ValueError):  # still a ValueError, as Arrow's own error was, for handlers that catch those
        storage.read_table(str(bad))


def test_json_lines_read_as_ray_data_reads_them(tmp_path):
    path = tmp_path / "rows.jsonl"
    long = "x" * (3 << 20)  # one line longer than Arrow's default 1 MB block: read whole, no straddling error
    path.write_text(f'{{"q": "a", "n": 1}}\n{{"q": "{long}", "n": 2}}\n')
    table = storage.read_json_lines(str(path))
    assert table["n"].to_pylist() == [1, 2] and len(table["q"][1].as_py()) == len(long)
    path.write_text('{"q": "lone \\ud83d surrogate", "n": 1}\n')  # Arrow refuses it; pandas reads the row
    assert storage.read_json_lines(str(path))["n"].to_pylist() == [1]
    path.write_text("")
    assert storage.read_json_lines(str(path)).num_rows == 0
