"""synth with the replay backend on real GSM8K worked solutions -> traces -> select, counts adding up; resume."""

from __future__ import annotations

import hashlib
import json
import shutil

import pyarrow.parquet as pq
import pytest
from datapaths import shared_data

from pipelines.core.artifacts import read_manifest
from pipelines.select import parse_args as select_args
from pipelines.select import select
from pipelines.synth import parse_args, synthesize

pytestmark = pytest.mark.slow  # real Ray Data runs: a few seconds each on an idle 2-core machine


def rows(folder):
    return sum(pq.read_metadata(f).num_rows for f in folder.glob("*.parquet"))


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    """300 real GSM8K train problems, plus one duplicate, three GSM8K *test* questions and one unusable row."""
    train = shared_data("gsm8k", "train.jsonl").read_text().splitlines()[:300]
    test = shared_data("gsm8k", "test.jsonl").read_text().splitlines()[:3]
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("\n".join([*train, train[0], *test, json.dumps({"question": "", "answer": "#### 1"})]) + "\n")
    return path


def test_replay_traces_then_select(ray_local, prompts, tmp_path):
    test_path = shared_data("gsm8k", "test.jsonl")
    out = synthesize(
        parse_args(
            [
                "--prompts_path",
                str(prompts),
                "--backend",
                "replay",
                "--reasoning",
                "on",
                "--decontaminate_against",
                f"gsm8k_test={test_path}:question",
                "--shard_rows",
                "64",
                "--output_dir",
                str(tmp_path / "traces"),
            ]
        )
    )
    counts = read_manifest(out)["counts"]
    rejected = pq.read_table(out / "rejected").to_pylist()
    reasons = {r["reason"] for r in rejected}
    assert counts["prompts_input"] == 305
    assert counts["prompts_input"] == counts["prompts_kept"] + sum(counts["prompts_rejected"].values())
    assert counts["prompts_rejected"]["duplicate_prompt"] == 1 and counts["prompts_rejected"]["unusable_row"] == 1
    assert counts["prompts_rejected"]["contaminated:gsm8k_test"] >= 3  # the planted test questions (and any real)
    assert reasons == {"duplicate_prompt", "unusable_row", "contaminated:gsm8k_test"}

    traces = pq.read_table(out / "traces").to_pylist()
    assert len(traces) == counts["samples"] == counts["prompts_kept"]  # replay: one trace per prompt
    assert len({t["id"] for t in traces}) == len(traces)
    assert all(t["id"] == f"{t['prompt_id']}:0" for t in traces)
    assert counts["verified"] == {"true": len(traces), "false": 0, "null": 0}  # worked solutions verify
    for t in traces[:20]:
        system, user, assistant = t["messages"]
        assert system == {"role": "system", "content": "/think"} and user["role"] == "user"
        assert assistant["content"].startswith("<think>\n") and "</think>" in assistant["content"]
        assert "<<" not in assistant["content"]  # GSM8K calculator annotations removed
        assert t["predicted_answer"] == t["answer"] and t["generator"]["backend"] == "replay"

    sel = select(select_args(["--traces_path", str(out), "--output_dir", str(tmp_path / "select")]))
    c = read_manifest(sel)["counts"]
    assert c["samples"] == len(traces) and c["prompts"] == len(traces)
    assert c["sft"]["input"] == c["sft"]["kept"] + sum(c["sft"]["rejected"].values())
    assert c["sft"]["kept"] == sum(c["sft"]["variants"].values()) == rows(sel / "sft")
    assert 0 < c["sft"]["variants"]["no_think"] < 0.2 * c["sft"]["kept"]  # ~10% by default
    assert c["rl_prompts"] == {"input": len(traces), "kept": 0, "rejected": {"too_easy": len(traces)}}
    assert c["preference"]["kept"] == 0 and c["preference"]["no_pair"] == {"no_incorrect": len(traces)}
    for name in ("sft", "preference", "rl_prompts"):
        assert read_manifest(sel / name)["counts"] == c[name]
    assert "Pass rate per prompt" in (sel / "report.md").read_text()

    # select decontaminates traces too: a benchmark holding five of these training questions drops their traces.
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(line + "\n" for line in shared_data("gsm8k", "train.jsonl").read_text().splitlines()[:5]))
    argv = [
        "--traces_path",
        str(out),
        "--output_dir",
        str(tmp_path / "select_decont"),
        "--decontaminate_against",
        f"bench={bench}:question",
    ]
    manifest = read_manifest(select(select_args(argv)))
    removed, c = manifest["decontamination"]["bench"], manifest["counts"]
    assert removed["traces_removed"] >= 5 and removed["prompts_removed"] >= 5  # (and any near-copy among the 300)
    assert c["sft"]["rejected"]["contaminated:bench"] == removed["traces_removed"]
    assert c["rl_prompts"]["rejected"]["contaminated:bench"] == removed["prompts_removed"]
    assert c["sft"]["kept"] == rows(tmp_path / "select_decont" / "sft") < len(traces)
    assert "## Decontamination" in (tmp_path / "select_decont" / "report.md").read_text()


def test_resume_keeps_finished_samples(ray_local, prompts, tmp_path):
    argv = [
        "--prompts_path",
        str(prompts),
        "--backend",
        "replay",
        "--max_prompts",
        "200",
        "--shard_rows",
        "40",
        "--output_dir",
        str(tmp_path / "traces"),
    ]
    done = synthesize(parse_args(argv))
    manifest = read_manifest(done)
    # Make it look like a run killed midway: the partial directory of the same hash with only some shards in it.
    partial = done.parent / f".{done.name}.partial"
    done.rename(partial)
    (partial / "manifest.json").unlink()
    (partial / ".lineage.json").write_text(json.dumps({"hash": manifest["hash"], "stage": "synth"}))
    shutil.rmtree(partial / "rejected")
    shards = sorted((partial / "traces").glob("*.parquet"))
    kept, dropped = shards[: len(shards) // 2], shards[len(shards) // 2 :]
    finished = {f.name: f.read_bytes() for f in kept}
    for f in dropped:
        f.unlink()
    n_finished = sum(pq.read_metadata(f).num_rows for f in kept)

    again = synthesize(parse_args(argv))
    counts = read_manifest(again)["counts"]
    assert counts["samples_resumed"] == n_finished > 0
    assert counts["samples"] == manifest["counts"]["samples"]
    for name, data in finished.items():  # finished shards were kept as they were, not regenerated
        assert (again / "traces" / name).read_bytes() == data
    ids = pq.read_table(again / "traces", columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == counts["samples"]
    assert not partial.exists()


def test_a_broken_prompt_row_is_an_error_naming_file_and_line(ray_local, tmp_path):
    """Arrow's JSON errors name neither file nor line. A lone surrogate ("\\ud83d") is no error here: Ray's JSON
    reader falls back to pandas, which drops it, so it never reaches Arrow."""
    from pipelines.core.config import ConfigError
    from pipelines.synth import read_prompts

    path = tmp_path / "prompts.jsonl"
    good = '{"question": "What is 1 + 1?", "answer": "2"}\n'
    path.write_text(good + '{"question": "What is 2 + \\ud83d?", "answer": "4"}\n')
    assert len(read_prompts(parse_args(["--prompts_path", str(path), "--backend", "replay"]))) == 2
    path.write_text(good + '{"question": "cut off\n')
    with pytest.raises(ConfigError, match=f"{path}:2: malformed JSON"):
        read_prompts(parse_args(["--prompts_path", str(path), "--backend", "replay"]))


def test_empty_prompts_give_empty_traces_and_an_empty_selection(ray_local, tmp_path):
    """Every stage takes an empty input (issue 13 item 17): traces/ keeps a zero-row file with the schema, and select
    writes its three sets with zero rows (grouping the empty table used to raise ArrowInvalid)."""
    (tmp_path / "prompts.jsonl").write_text("")
    traces = synthesize(
        parse_args(
            [
                "--prompts_path",
                str(tmp_path / "prompts.jsonl"),
                "--backend",
                "replay",
                "--output_dir",
                str(tmp_path / "traces"),
            ]
        )
    )
    assert read_manifest(traces)["counts"]["samples"] == 0 and len(list((traces / "traces").glob("*.parquet"))) == 1
    sel = select(select_args(["--traces_path", str(traces), "--output_dir", str(tmp_path / "select")]))
    assert {k: v["kept"] for k, v in read_manifest(sel)["counts"].items() if isinstance(v, dict)} == {
        "sft": 0,
        "preference": 0,
        "rl_prompts": 0,
    }


def artifact_bytes(root):
    """Every file's bytes; manifests and cards without the lines that record when and how long (they differ by
    design), mix's seconds per pass included."""
    out = {}
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        data = f.read_bytes()
        if f.name == "manifest.json":
            manifest = json.loads(data)
            manifest.pop("created_at"), manifest.pop("duration_s")
            manifest.pop("seconds", None)  # mix: wall time per pass
            data = json.dumps(manifest, sort_keys=True).encode()
        elif f.name == "README.md" and (f.parent / "manifest.json").exists():
            when = json.loads((f.parent / "manifest.json").read_text())
            stamps = (when["created_at"], f"{when['duration_s']} s")
            stamps += tuple(f"| {k} | {v} |" for k, v in when.get("seconds", {}).items())
            data = "\n".join(
                line for line in data.decode().splitlines() if not any(s in line for s in stamps)
            ).encode()
        out[f.relative_to(root).as_posix()] = data
    return out


def test_synth_and_select_are_byte_identical_when_run_twice(ray_local, prompts, tmp_path):
    """Same input + config + seed -> the same files, byte for byte (shard names are content hashes, order fixed).
    Training checkpoints are not covered: float reductions on threads/GPUs are not bitwise reproducible."""
    traces, selected = tmp_path / "traces", tmp_path / "select"
    synth_argv = [
        "--prompts_path",
        str(prompts),
        "--backend",
        "replay",
        "--max_prompts",
        "60",
        "--shard_rows",
        "16",
        "--output_dir",
        str(traces),
    ]
    select_argv = ["--traces_path", str(traces), "--output_dir", str(selected), "--no_think_ratio", "0.3"]
    runs = []
    for _ in range(2):  # a fresh run each time, at the same paths (with --force the config would differ: force)
        shutil.rmtree(traces, ignore_errors=True), shutil.rmtree(selected, ignore_errors=True)
        synthesize(parse_args(synth_argv))
        select(select_args(select_argv))
        runs.append((artifact_bytes(traces), artifact_bytes(selected)))
    assert len([p for p in runs[0][0] if p.startswith("traces/")]) == 4  # 60 samples in shards of 16
    assert runs[0] == runs[1]


# Recorded from the stage as it was before it streamed its prompts (test_written_traces_keep_their_order_...).
GOLDEN_TRACES = [
    (["384a5e4f8231218d:0", "7800749170c26b90:0"], "27ecb9df279c6c94"),
    (["9ab8e719bf6f5c5c:0", "2bea67342b4d1f9f:0", "c898bd98e3a32df7:0", "ffc55f91b81bc6a0:0"], "00007975c5226755"),
    (["bd9f87093f32c386:0", "7847175775458f9b:0", "42385a964b2de23b:0", "e3f5a63b2cd21d69:0"], "672e45b8af5d64e8"),
]
GOLDEN_REJECTED = [
    {"prompt_id": "bd9f87093f32c386", "reason": "duplicate_prompt", "detail": "row 8"},
    {"prompt_id": "row:9", "reason": "unusable_row", "detail": "field 'question' is missing or empty"},
    {"prompt_id": "c9d3a6c1b99b353e", "reason": "contaminated:b", "detail": None},
]


def trace_digest(out):
    """The traces as written, shard by shard (ordered by first id): (ids of the shard, sha256 of its rows as
    canonical JSON); and the rejected rows in file order. Independent of Parquet's bytes (pyarrow's version is in
    them)."""
    shards = [pq.read_table(f).to_pylist() for f in (out / "traces").glob("*.parquet")]
    shards.sort(key=lambda rows: rows[0]["id"] if rows else "")
    digest = [
        ([r["id"] for r in rows], hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16])
        for rows in shards
    ]
    return digest, pq.read_table(out / "rejected").to_pylist()


def test_written_traces_keep_their_order_and_content(ray_local, prompts, tmp_path):
    """A golden of what synth writes for a small input (12 rows: a duplicate, an unusable row, a contaminated one;
    mixed reasoning; shards of 4): the streamed plan must give the same shards, in the same order, with the same
    rows, and the same rejected file, as the stage wrote before it streamed (recorded from that version)."""
    lines = prompts.read_text().splitlines()
    small = tmp_path / "small.jsonl"
    small.write_text("\n".join([*lines[:8], lines[0], lines[-1], lines[301], *lines[8:10]]) + "\n")
    bench = tmp_path / "bench.jsonl"
    bench.write_text(lines[3] + "\n")
    argv = ["--prompts_path", str(small), "--backend", "replay", "--reasoning", "mixed", "--shard_rows", "4"]
    argv += ["--decontaminate_against", f"b={bench}:question", "--seed", "7", "--output_dir", str(tmp_path / "t")]
    out = synthesize(parse_args(argv))
    digest, rejected = trace_digest(out)
    assert digest == GOLDEN_TRACES
    assert rejected == GOLDEN_REJECTED
