"""SIGKILL in each of curate's global steps and in the shard pass, and a Ray worker killed mid-stage: the reruns
end with byte-identical documents and exact counts (pass 1 has its own kill test in test_curate.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines import curate
from pipelines.core.artifacts import read_manifest

REPO = Path(__file__).resolve().parents[2]
KILLER = Path(__file__).with_name("curate_killer.py")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from pipelines import demo_data

    out = tmp_path_factory.mktemp("kill") / "demo_data"
    demo_data.main(
        [
            "--output_dir",
            str(out),
            "--num_pages",
            "120",
            "--num_pii_pages",
            "4",
            "--num_exact_duplicates",
            "12",
            "--num_near_duplicates",
            "8",
            "--num_spam_pages",
            "6",
            "--num_non_english_pages",
            "3",
            "--num_train_problems",
            "1",
            "--num_test_problems",
            "3",
            "--num_contaminated_pages",
            "4",
        ]
    )
    return out


def files_of(out: Path) -> dict[str, bytes]:
    """documents/, rejected/ and quarantine/ byte for byte."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for d in ("documents", "rejected", "quarantine")
        for p in sorted((out / d).glob("*.parquet"))
    }


def index_rows(out: Path) -> dict[str, list]:
    """The LSH index as sorted rows: its part files follow the shuffle's arrival order, in any run."""
    return {d: sorted(map(str, pq.read_table(out / "lsh_index" / d).to_pylist())) for d in ("buckets", "ids")}


@pytest.mark.slow
def test_kill_in_every_global_step_and_the_shard_pass_then_rerun(ray_local, corpus, tmp_path):
    """Run 1 loses a Ray worker in pass 1 (Ray retries it) and is then killed in exact dedup; runs 2-4 resume and
    are killed in decontamination, fuzzy dedup and the shard pass; run 5 finishes. Every kill leaves a lock of a
    dead process, which the next run takes over."""
    argv = [
        "--config",
        str(REPO / "pipelines/configs/curate_demo.yaml"),
        "--input_paths",
        str(corpus / "web"),
        "--decontaminate_against",
        f"demo_test={corpus / 'math' / 'test.jsonl'}:question",
        "--chunk_bytes",
        "40000",
        "--shard_bytes",
        "40000",
    ]
    out, work = tmp_path / "killed", tmp_path / ".killed.partial" / ".work"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
        "NANOFORGE_PROGRESS": "0",
        "PYTHONPATH": str(REPO),
    }
    done_before = []
    for kills, step in (
        ("worker,exact_dedup", "exact_dedup"),
        ("decontaminate", "decontaminate"),
        ("fuzzy_dedup", "fuzzy_dedup"),
        ("shards", None),
    ):
        proc = subprocess.run(
            [sys.executable, str(KILLER), kills, str(tmp_path), "--", *argv, "--output_dir", str(out)],
            cwd=REPO,
            env=env,
            start_new_session=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == -signal.SIGKILL, f"{kills}: {proc.returncode}\n{proc.stderr[-3000:]}"
        assert read_manifest(out) is None and (tmp_path / ".killed.lock").exists()  # killed: no release
        assert all((work / "rejects" / f"{s}.done").exists() for s in done_before)  # earlier steps are kept...
        if step:
            assert not (work / "rejects" / f"{step}.done").exists()  # ...this one is redone
            done_before.append(step)
    assert (tmp_path / "worker").exists()  # the worker kill happened, and run 1 still reached exact dedup
    n_chunks = len(list((work / "chunks").glob("*.parquet")))
    shards_written = len(list((work / "shards").glob("*.json")))

    curate.main([*argv, "--output_dir", str(out)])
    curate.main([*argv, "--output_dir", str(tmp_path / "clean")])
    killed, clean = read_manifest(out), read_manifest(tmp_path / "clean")
    assert killed["resumed"]["chunks_reused"] == n_chunks == clean["resumed"]["chunks"]  # pass 1 was never redone
    assert killed["resumed"]["shards_reused"] == shards_written and clean["resumed"]["shards"] > 1
    assert killed["counts"] == clean["counts"]
    counts = killed["counts"]
    assert counts["input"] == counts["kept"] + sum(counts["rejected"].values()) + counts["quarantined"]
    assert {"exact_duplicate", "fuzzy_duplicate", "contaminated:demo_test"} <= set(counts["rejected"])
    assert files_of(out) == files_of(tmp_path / "clean") and len(files_of(out)) > 3
    assert index_rows(out) == index_rows(tmp_path / "clean")
    assert json.loads((out / "stats.json").read_text())["counts"] == counts
