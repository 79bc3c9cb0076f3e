"""The curate stage end to end on real local Ray: dedup, quarantine, the demo corpus, determinism, resume."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datapaths import shared_data

from pipelines import curate
from pipelines.core.artifacts import read_manifest

REPO = Path(__file__).resolve().parents[2]
DEMO_YAML = str(REPO / "pipelines" / "configs" / "curate_demo.yaml")


@pytest.fixture
def plain(tmp_path) -> list[str]:
    """Flags for a run without per-document filters, language ID or PII: tests of the plumbing."""
    path = tmp_path / "plain.yaml"
    path.write_text(
        "# plumbing only\n# nanoforge curate --config plain.yaml\nfilters: []\nlanguage_id: false\npii: false\n"
    )
    return ["--config", str(path)]


def read_dir(path: Path) -> list[dict]:
    files = sorted(path.glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).to_pylist() if files else []


def assert_conserved(out: Path) -> dict:
    counts = read_manifest(out)["counts"]
    assert counts["input"] == counts["kept"] + sum(counts["rejected"].values()) + counts["quarantined"]
    assert len(read_dir(out / "documents")) == counts["kept"]
    assert len(read_dir(out / "rejected")) == sum(counts["rejected"].values())
    assert len(read_dir(out / "quarantine")) == counts["quarantined"]
    return counts


def test_exact_dedup_on_cs336_fixtures(ray_local, tmp_path, capsys, plain):
    """doc1 and doc2 are byte-identical: one survives (the first), the other names it; the MIT licences of rails and
    react differ by a few words (fuzzy, not exact duplicates) and both stay. A copy of doc1 with CRLF line ends and
    trailing spaces is the same document after normalization."""
    lines = shared_data("cs336_assignment4_fixtures", "documents_with_line_duplicates")
    fuzzy = shared_data("cs336_assignment4_fixtures", "documents_with_fuzzy_duplicates")
    variant = tmp_path / "in" / "doc1_crlf.txt"
    variant.parent.mkdir()
    variant.write_bytes(
        b"".join(line.rstrip() + b"   \r\n" for line in (lines / "doc1.txt").read_bytes().splitlines())
    )
    out = tmp_path / "out"
    argv = ["--input_paths", str(lines), str(fuzzy), str(variant), "--output_dir", str(out), *plain]
    curate.main(argv)
    counts = assert_conserved(out)
    assert counts["rejected"] == {"exact_duplicate": 2}
    rejected = read_dir(out / "rejected")
    assert {(r["id"], r["duplicate_of"]) for r in rejected} == {
        ("doc2.txt:1", "doc1.txt:1"),
        ("doc1_crlf.txt:1", "doc1.txt:1"),
    }
    kept = {d["id"] for d in read_dir(out / "documents")}
    assert kept == {
        "doc1.txt:1",
        "doc3.txt:1",
        "doc4.txt:1",
        "doc5.txt:1",
        "pytorch_license.txt:1",
        "rails_mit_license.txt:1",
        "react_mit_license.txt:1",
    }
    assert (out / "report.md").read_text().count("exact_duplicate") == 1 and (out / "report.png").stat().st_size > 0
    # same config and inputs: a no-op that says so
    capsys.readouterr()
    curate.main(argv)
    assert "up to date" in capsys.readouterr().out


def write_bad_inputs(folder: Path) -> dict[str, list[int]]:
    """Files with every kind of unreadable input next to good lines; returns {file name: quarantined line numbers}."""
    folder.mkdir()

    def good(n: int) -> bytes:
        return json.dumps({"text": f"Fine document number {n} about gardening in spring."}).encode()

    (folder / "a.jsonl").write_bytes(
        b"\n".join(
            [
                good(1),  # 1
                b'{"id": "x", "text": "cut off in the mid',  # 2 malformed JSON
                b'{"text": "caf\xe9 \xff"}',  # 3 invalid UTF-8
                b'{"id": "no-text", "body": "..."}',  # 4 missing text field
                b'{"text": 12345}',  # 5 non-string text
                b'{"text": null}',  # 6 null text
                b'["not", "an", "object"]',  # 7 not a JSON object
                b"",  # 8 blank line: not a record
                good(9),  # 9
            ]
        )
        + b"\n"
    )
    data = gzip.compress(
        b"".join(
            json.dumps({"id": f"g{i}", "text": f"Line {i} of a gzip file."}).encode() + b"\n" for i in range(2000)
        )
    )
    (folder / "b.jsonl.gz").write_bytes(data[: len(data) * 2 // 3])  # truncated gzip
    (folder / "c.jsonl").write_bytes(b"")  # empty file
    with open(folder / "d.jsonl", "wb") as f:  # a single 50 MB line, then a good one
        f.write(b'{"text": "' + b"spam " * 10_000_000 + b'"}\n')
        f.write(good(2) + b"\n")
    zstandard = pytest.importorskip("zstandard")  # a declared dependency; the GPU image lacks it
    (folder / "e.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(good(3) + b"\n" + good(4) + b"\n"))
    pq.write_table(
        pa.table({"id": ["p0", "p1", "p2"], "text": ["Fine text.", None, "More fine text."]}), folder / "f.parquet"
    )
    return {"a.jsonl": [2, 3, 4, 5, 6, 7], "c.jsonl": [0], "d.jsonl": [1], "f.parquet": [1]}


def test_bad_input_is_quarantined_and_counts_add_up(ray_local, tmp_path, plain):
    expected = write_bad_inputs(tmp_path / "in")
    out = tmp_path / "out"
    curate.main(["--input_paths", str(tmp_path / "in"), "--output_dir", str(out), *plain])
    counts = assert_conserved(out)
    quarantine = read_dir(out / "quarantine")
    by_file: dict[str, list[dict]] = {}
    for q in quarantine:
        by_file.setdefault(Path(q["file"]).name, []).append(q)
    for name, lines in expected.items():
        assert sorted(q["line_or_row"] for q in by_file[name]) == lines, name
    for q in by_file["a.jsonl"] + by_file["d.jsonl"]:  # errors name the file and line for people
        assert f"{q['file']}:{q['line_or_row']}" in q["error"]
    assert "over max_line_bytes" in by_file["d.jsonl"][0]["error"] and len(by_file["d.jsonl"][0]["raw"]) <= 1000
    assert "empty file" in by_file["c.jsonl"][0]["error"]
    (truncated,) = by_file["b.jsonl.gz"]
    assert "truncated" in truncated["error"]
    kept = read_dir(out / "documents")
    n_gzip = sum(d["id"].startswith("g") for d in kept)
    assert 0 < n_gzip < 2000 and truncated["line_or_row"] == n_gzip + 1  # everything before the damage is kept
    assert counts["quarantined"] == 10 and counts["kept"] == 2 + 1 + 2 + 2 + n_gzip  # a, d, e, f, b
    assert {d["id"] for d in kept} >= {"a.jsonl:1", "a.jsonl:9", "d.jsonl:2", "p0", "p2"}


@pytest.fixture(scope="module")
def demo_corpus(tmp_path_factory) -> Path:
    from pipelines import demo_data

    out = tmp_path_factory.mktemp("demo") / "demo_data"
    demo_data.main(
        [
            "--output_dir",
            str(out),
            "--num_pages",
            "300",
            "--num_pii_pages",
            "10",
            "--num_exact_duplicates",
            "30",
            "--num_near_duplicates",
            "10",
            "--num_spam_pages",
            "35",
            "--num_non_english_pages",
            "9",
            "--num_train_problems",
            "1",
            "--num_test_problems",
            "3",
            "--num_contaminated_pages",
            "4",
        ]
    )
    return out


def test_demo_corpus_planted_defects_and_determinism(ray_local, demo_corpus, tmp_path):
    """curate_demo.yaml on the generated corpus finds what was planted, and documents/, rejected/, quarantine/ and
    stats.json are byte-identical with 1 or 2 workers and smaller chunks/Ray blocks."""
    planted = json.loads((demo_corpus / "planted.json").read_text())
    base = ["--config", DEMO_YAML, "--input_paths", str(demo_corpus / "web")]
    base += ["--decontaminate_against", f"demo_test={demo_corpus / 'math' / 'test.jsonl'}:question"]
    curate.main([*base, "--output_dir", str(tmp_path / "one"), "--num_workers", "1"])
    ctx = ray_local.data.DataContext.get_current()
    block_size = ctx.target_max_block_size
    ctx.target_max_block_size = 64 * 1024  # other Ray block boundaries
    try:
        curate.main([*base, "--output_dir", str(tmp_path / "two"), "--num_workers", "2"])
    finally:
        ctx.target_max_block_size = block_size
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in ("documents", "rejected", "quarantine"):
        names = sorted(p.name for p in (one / folder).iterdir())
        assert names == sorted(p.name for p in (two / folder).iterdir())
        for name in names:
            assert (one / folder / name).read_bytes() == (two / folder / name).read_bytes(), f"{folder}/{name}"
    assert (one / "stats.json").read_bytes() == (two / "stats.json").read_bytes()

    counts = assert_conserved(one)
    assert counts["input"] == planted["counts"]["lines"]
    # every malformed line is quarantined, at its file and line
    quarantine = {(Path(q["file"]).name, q["line_or_row"]) for q in read_dir(one / "quarantine")}
    assert quarantine == {(Path(m["file"]).name, m["line"]) for m in planted["malformed"]}
    rejected = {r["id"]: r for r in read_dir(one / "rejected")}
    kept = {d["id"]: d for d in read_dir(one / "documents")}
    # exact duplicates: exactly one of each group survives; the others name it
    groups: dict[str, set[str]] = {}
    for d in planted["exact_duplicates"]:
        groups.setdefault(d["original"], {d["original"]}).add(d["id"])
    for members in groups.values():
        (survivor,) = members & kept.keys()
        assert all(
            rejected[m]["reason"] == "exact_duplicate" and rejected[m]["duplicate_of"] == survivor
            for m in members - {survivor}
        )
    # near duplicates (curate_demo.yaml: fuzzy_dedup fineweb) name the page they copy; pages quoting a test problem
    near = [d for d in planted["near_duplicates"] if d["original"] in kept]
    assert len(near) >= len(planted["near_duplicates"]) // 2  # the others copy a page a filter dropped
    assert all(
        (rejected[d["id"]]["reason"], rejected[d["id"]]["duplicate_of"]) == ("fuzzy_duplicate", d["original"])
        for d in near
    )
    assert {rejected[d["id"]]["reason"] for d in planted["contaminated"]} == {"contaminated:demo_test"}
    assert sum(r["reason"] == "contaminated:demo_test" for r in rejected.values()) == len(planted["contaminated"])
    assert all(rejected[d["id"]]["reason"] == "wrong_language" for d in planted["non_english"])
    assert all(d["id"] in rejected for d in planted["spam"])  # every spam page is dropped, for a datatrove reason
    assert all(rejected[i]["reason"] == "empty_after_normalize" for i in planted["ids"]["empty"])
    ordinary_kept = sum(i in kept for i in planted["ids"]["ordinary"]) / len(planted["ids"]["ordinary"])
    assert ordinary_kept > 0.8
    for page in planted["pii"]:  # redacted in kept text
        text = kept[page["id"]]["text"]
        assert not any(s in text for s in page["emails"] + page["phones"] + page["ips"])
        assert "|||EMAIL_ADDRESS|||" in text and "|||PHONE_NUMBER|||" in text and "|||IP_ADDRESS|||" in text
    assert read_manifest(one)["pii_redactions"]["email"] >= len(planted["pii"])


def process_tree(pid: int) -> list[int]:
    """`pid`'s descendants, from /proc: a local Ray's GCS, raylet and workers, which a kill of the driver's process
    group does not reach, and which would otherwise go on writing chunks for a moment after it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def running(pid: int) -> bool:
    """Not exited: a process killed after its parent died stays a zombie until init reaps it (or for good where
    the container's init does not reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow
def test_resume_after_kill(ray_local, demo_corpus, tmp_path):
    """Kill a run (the whole process group: driver and its Ray) after some chunks are checkpointed; the rerun
    reuses those chunks and ends with the same documents/ as a run that was never interrupted."""
    argv = ["--config", DEMO_YAML, "--input_paths", str(demo_corpus / "web"), "--chunk_bytes", "30000"]
    out = tmp_path / "killed"
    chunks_dir = tmp_path / ".killed.partial" / ".work" / "chunks"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"NANOFORGE_PROGRESS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.curate", *argv, "--output_dir", str(out), "--num_workers", "1"],
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and len(list(chunks_dir.glob("*.parquet"))) < 3:
            assert proc.poll() is None, "the run ended before it could be interrupted"
            time.sleep(0.05)
    finally:
        tree = process_tree(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in tree:  # a worker left running wrote a 4th chunk after the count below once (CI, 2026-12-02)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(running(pid) for pid in tree):
            time.sleep(0.05)
    finished = [p.name for p in chunks_dir.glob("*.parquet")]
    assert len(finished) >= 3 and not (out / "manifest.json").exists()

    curate.main([*argv, "--output_dir", str(out)])
    resumed = read_manifest(out)["resumed"]
    assert resumed["chunks_reused"] == len(finished) and resumed["chunks"] > len(finished)
    assert resumed["chunks_processed"] == resumed["chunks"] - len(finished)  # finished chunks were not redone
    curate.main([*argv, "--output_dir", str(tmp_path / "clean")])
    assert_conserved(out)
    for name in sorted(p.name for p in (out / "documents").iterdir()):
        assert (out / "documents" / name).read_bytes() == (tmp_path / "clean" / "documents" / name).read_bytes()
    counts = Counter(r["id"] for r in read_dir(out / "documents"))
    assert max(counts.values()) == 1  # nothing duplicated by the restart


def test_evaluation_sets_lsh_index_and_lid_model_are_hashed_inputs(tmp_path):
    """Replacing an eval set, the LSH index or the LID model changes the artifact hash (no Ray: hashing only)."""
    from pipelines.core.artifacts import Artifact
    from pipelines.core.config import to_dict
    from pipelines.curation.filters import find_lang_model

    (tmp_path / "raw.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "test.jsonl").write_text('{"question": "what is 2 + 2"}\n')
    (tmp_path / "lsh_index" / "buckets").mkdir(parents=True)
    (tmp_path / "lsh_index" / "buckets" / "b0.parquet").write_bytes(b"0")
    cfg = curate.parse_args(
        [
            "--input_paths",
            str(tmp_path / "raw.jsonl"),
            "--output_dir",
            str(tmp_path / "out"),
            "--decontaminate_against",
            f"t={tmp_path / 'test.jsonl'}:question",
            "--fuzzy_dedup_index",
            str(tmp_path / "lsh_index"),
        ]
    )
    inputs = curate.artifact_inputs(cfg)
    assert inputs[1:] == [str(tmp_path / "test.jsonl"), str(tmp_path / "lsh_index"), find_lang_model("")]

    def artifact_hash():
        return Artifact(cfg.output_dir, kind="documents", stage="curate", config=to_dict(cfg), inputs=inputs).hash

    before = artifact_hash()
    (tmp_path / "test.jsonl").write_text('{"question": "what is 2 + 3, the new test set"}\n')
    after_eval = artifact_hash()
    (tmp_path / "lsh_index" / "buckets" / "b1.parquet").write_bytes(b"1")
    assert len({before, after_eval, artifact_hash()}) == 3


def test_exact_dedup_in_driver_matches_ray_groupby(ray_local, tmp_path):
    """Up to EXACT_DEDUP_IN_DRIVER candidates the driver groups the hashes itself; the rejections it writes, per
    output shard, are the Ray groupby's: duplicates within a chunk and across chunks, the first in input order
    survives, rows that are not kept never count (even with a hash)."""
    from pipelines.curation import chunks

    rows = {  # chunk -> [(status, text hash)]; ids are "<chunk>/<row>"
        "a-00000": [("kept", "h1"), ("kept", "h2"), ("kept", "h1"), ("rejected", None), ("kept", "h3")],
        "a-00001": [("kept", "h2"), ("rejected", "h4"), ("kept", "h4"), ("kept", "h1")],
        "b-00000": [("kept", "h4"), ("kept", "h5"), ("quarantined", None), ("kept", "h3"), ("kept", "h5")],
    }
    (tmp_path / "chunks").mkdir()
    for chunk, items in rows.items():
        table = pa.table(
            {
                "chunk": [chunk] * len(items),
                "row": pa.array(range(len(items)), pa.int32()),
                "status": [s for s, _ in items],
                "id": [f"{chunk}/{i}" for i in range(len(items))],
                "hash": [h for _, h in items],
            }
        )
        meta = {"candidates": sum(s == "kept" for s, _ in items), "candidate_bytes": 0}
        table = table.replace_schema_metadata({"nanoforge": json.dumps(meta)})
        pq.write_table(table, tmp_path / "chunks" / f"{chunk}.parquet")
    files = chunks.chunk_files(str(tmp_path))
    shard_of = {"a-00000": 0, "a-00001": 0, "b-00000": 1}
    cfg = curate.parse_args(["--input_paths", str(tmp_path)])
    found = {}
    for name, in_driver in (("driver", curate.EXACT_DEDUP_IN_DRIVER), ("ray", 0)):
        target = str(tmp_path / name)
        chunks.write_rejections(curate.exact_duplicates(files, cfg, in_driver=in_driver), target, shard_of, 2)
        found[name] = [chunks.read_rejections(target, shard) for shard in (0, 1)]
    dup = ("exact_dedup", "exact_duplicate")
    assert (
        found["driver"]
        == found["ray"]
        == [
            {
                ("a-00000", 2): (*dup, "a-00000/0"),
                ("a-00001", 0): (*dup, "a-00000/1"),
                ("a-00001", 3): (*dup, "a-00000/0"),
            },
            {
                ("b-00000", 0): (*dup, "a-00001/2"),
                ("b-00000", 3): (*dup, "a-00000/4"),
                ("b-00000", 4): (*dup, "b-00000/1"),
            },
        ]
    )
