"""select's decisions on real GSM8K problems: budget truncation, variants, pass-rate windows, pairs, RL prompts.

Samples are built from real worked solutions (replayed, so correct) and the same solutions with the final answer
changed (so incorrect); `verified` comes from the real verifier, never typed by hand.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest
from datapaths import shared_data

from pipelines.reasoning.prompt_formats import (
    fields_for,
    replay_completion,
    split_reasoning,
    to_prompt,
    with_reasoning_flag,
)
from pipelines.reasoning.selection import select_prompt, truncate_reasoning, words
from pipelines.reasoning.verify import verify
from pipelines.select import SelectConfig

CFG = SelectConfig(traces_path=["unused"], no_think_ratio=0.0, budget_ratio=0.0, thinking_budgets=[8])


@pytest.fixture(scope="module")
def problems():
    lines = shared_data("gsm8k", "train.jsonl").read_text().splitlines()[:40]
    fields = fields_for("gsm8k", {})
    return [to_prompt(json.loads(line), "gsm8k", fields, None) for line in lines]


def sample(prompt, k, mode="on", correct=True, truncated=False, error=None):
    """A trace row: the replayed solution, or the same with a wrong final answer (verified by the real verifier)."""
    content = replay_completion("gsm8k", prompt["solution"], prompt["answer"], mode)
    content = content.replace("<think>\n", f"<think>\nAttempt {k}.\n", 1)  # samples differ, as sampled ones do
    if not correct:
        content = content.replace(f"\\boxed{{{prompt['answer']}}}", f"\\boxed{{{int(prompt['answer']) + 1 + k}}}")
    if truncated:
        content = content.split("</think>")[0]  # stopped inside the thinking: no answer
    messages = with_reasoning_flag(prompt["messages"], mode)
    if not error:
        messages = [*messages, {"role": "assistant", "content": content}]
    return {
        "id": f"{prompt['prompt_id']}:{k}",
        "prompt_id": prompt["prompt_id"],
        "messages": messages,
        "answer": prompt["answer"],
        "reasoning": mode,
        "truncated": truncated,
        "error": error,
        "verified": None if error else verify(content, prompt["answer"]),
        "traces": "t",
        "source": "gsm8k/train",
    }


def kinds(out):
    return Counter(kind for kind, _ in out)


def test_budget_truncation_keeps_answer_and_think_structure(problems):
    for prompt in problems:
        content = replay_completion("gsm8k", prompt["solution"], prompt["answer"], "on")
        reasoning, answer = split_reasoning(content)
        budget = max(1, len(words(reasoning)) // 2)
        cut = truncate_reasoning(content, budget)
        assert cut.startswith("<think>") and cut.count("<think>") == 1 and cut.count("</think>") == 1
        cut_reasoning, cut_answer = split_reasoning(cut)
        assert cut_answer == answer  # the final answer survives unchanged
        assert len(words(cut_reasoning)) == budget
        assert reasoning.startswith(cut_reasoning)
        assert verify(cut, prompt["answer"]) is True  # still a correct trace


def test_budget_truncation_counts_model_tokens(tiny_base, problems):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    content = replay_completion("gsm8k", problems[0]["solution"], problems[0]["answer"], "on")
    cut = truncate_reasoning(content, 10, tok)
    reasoning, _ = split_reasoning(cut)
    assert len(tok(reasoning, add_special_tokens=False)["input_ids"]) <= 10 + 1  # decode/encode may merge one token
    assert verify(cut, problems[0]["answer"]) is True


def test_every_sample_and_prompt_accounted_for(problems):
    p = problems[0]
    samples = [
        sample(p, 0),
        sample(p, 1),
        sample(p, 2, correct=False),
        sample(p, 3, truncated=True),
        sample(p, 4, error="engine died"),
    ]
    out = select_prompt(samples, CFG)
    sft = [r for k, r in out if k == "sft"]
    rejected = {r["id"]: r["reason"] for k, r in out if k == "sft_rejected"}
    assert len(sft) + len(rejected) == len(samples)
    assert {r["id"] for r in sft} == {samples[0]["id"], samples[1]["id"]}
    assert rejected == {samples[2]["id"]: "incorrect", samples[3]["id"]: "truncated", samples[4]["id"]: "error"}
    (stats,) = [r for k, r in out if k == "prompt"]
    assert stats["pass_rate"] == pytest.approx(2 / 4)  # the error row is not scored; the truncated one counts wrong
    assert kinds(out)["rl"] == 1  # 0 < 0.5 < 1: a learnable RL prompt

    twin = sample(p, 0) | {"id": f"{p['prompt_id']}:9"}  # the same text sampled twice
    reasons = [r["reason"] for k, r in select_prompt([samples[0], twin], CFG) if k == "sft_rejected"]
    assert reasons == ["duplicate_completion"]

    # The stage's writers summarize each kind's records and the driver tallies them: every kind select_prompt emits,
    # the rl prompts (which carry no reason) included (the demo's select failed on them with a KeyError)
    from pipelines.select import summarize, tally

    by_kind = {}
    for kind, record in out:
        by_kind.setdefault(kind, []).append(record)
    counts = tally([summarize(kind, records) for kind, records in by_kind.items()])
    assert counts["rl_prompts"]["kept"] == 1 and counts["sft"]["kept"] == 2


def test_pass_rate_window_and_rl_prompts(problems):
    easy = [sample(problems[1], k) for k in range(4)]
    hard = [sample(problems[2], k, correct=False) for k in range(4)]
    mid = [sample(problems[3], 0), *(sample(problems[3], k, correct=False) for k in range(1, 4))]
    window = replace(CFG, min_pass_rate=0.2, max_pass_rate=0.8)
    assert {r["reason"] for k, r in select_prompt(easy, window) if k == "sft_rejected"} == {"pass_rate_out_of_window"}
    assert kinds(select_prompt(mid, window))["sft"] == 1  # 1/4 is inside 0.2-0.8: its one correct sample is kept
    assert kinds(select_prompt(mid, replace(window, min_pass_rate=0.3)))["sft"] == 0
    reasons = {
        name: r.get("reason")
        for name, rows in (("easy", easy), ("hard", hard), ("mid", mid))
        for k, r in select_prompt(rows, CFG)
        if k in ("rl", "rl_rejected")
    }
    assert reasons == {"easy": "too_easy", "hard": "too_hard", "mid": None}
    (rl,) = [r for k, r in select_prompt(mid, CFG) if k == "rl"]
    assert rl["answer"] == problems[3]["answer"] and [m["role"] for m in rl["prompt"]] == ["user"]


def test_pair_construction(problems):
    p = problems[4]
    samples = [
        sample(p, 0),
        sample(p, 1),
        sample(p, 2, correct=False),
        sample(p, 3, correct=False),
        sample(p, 4, correct=False),
        sample(p, 5, truncated=True),
        sample(p, 6, mode="off"),
        sample(p, 7, mode="off", correct=False),
    ]
    by_id = {s["id"]: s for s in samples}
    pairs = [r for k, r in select_prompt(samples, replace(CFG, max_pairs_per_prompt=5)) if k == "pair"]
    assert Counter(r["reasoning"] for r in pairs) == {"on": 2, "off": 1}  # min(2 correct, 3 incorrect) + 1 off
    for pair in pairs:
        chosen, rejected = by_id[pair["chosen_id"]], by_id[pair["rejected_id"]]
        assert chosen["verified"] is True and rejected["verified"] is False
        assert not rejected["truncated"]  # an unfinished trace is not a rejected answer
        assert chosen["reasoning"] == rejected["reasoning"] == pair["reasoning"]  # same /think mode
        assert pair["prompt"] == chosen["messages"][:-1] and pair["prompt"][0]["role"] == "system"
        assert pair["chosen"] == chosen["messages"][-1:] and pair["rejected"] == rejected["messages"][-1:]
    assert len([r for k, r in select_prompt(samples, replace(CFG, max_pairs_per_prompt=1)) if k == "pair"]) == 2
    with_truncated = [
        r
        for k, r in select_prompt(samples, replace(CFG, max_pairs_per_prompt=5, pair_truncated=True))
        if k == "pair" and r["reasoning"] == "on"
    ]
    assert len(with_truncated) == 2  # still min(2 correct, 4 wrong)
    unfinished = [
        p for p in select_prompt([samples[0], samples[5]], replace(CFG, pair_truncated=True)) if p[0] == "pair"
    ]
    assert [r["rejected_id"] for _, r in unfinished] == [samples[5]["id"]]


def test_length_pairs_prefer_the_shorter_correct_answer(problems):
    p = problems[5]
    short, long = sample(p, 0), sample(p, 1)
    padding = " Let me double-check each step carefully once more." * 10
    long["messages"][-1]["content"] = long["messages"][-1]["content"].replace("</think>", padding + "\n</think>")
    out = select_prompt([short, long], replace(CFG, length_pairs=True, min_length_ratio=1.5))
    (pair,) = [r for k, r in out if k == "pair"]
    assert pair["pair_type"] == "shorter_vs_longer"
    assert (pair["chosen_id"], pair["rejected_id"]) == (short["id"], long["id"])
    assert not [r for k, r in select_prompt([short, long], CFG) if k == "pair"]  # off by default
    assert [r["reason"] for k, r in select_prompt([short, long], CFG) if k == "pairs_missing"] == ["no_incorrect"]


def test_variants_no_think_and_budget(problems):
    samples = [sample(p, k) for p in problems for k in range(2)]
    by_id = {s["id"]: s for s in samples}
    cfg = replace(CFG, no_think_ratio=0.3, budget_ratio=0.3, thinking_budgets=[4, 8])
    sft = [
        r
        for p in problems
        for k, r in select_prompt([s for s in samples if s["prompt_id"] == p["prompt_id"]], cfg)
        if k == "sft"
    ]
    variants = Counter(r["variant"] for r in sft)
    assert len(sft) == len(samples) and variants["no_think"] > 0 and variants["budget"] > 0 and variants["full"] > 0
    for r in sft:
        system, *_, assistant = r["messages"]
        reasoning, answer = split_reasoning(assistant["content"])
        original_reasoning, original_answer = split_reasoning(by_id[r["id"]]["messages"][-1]["content"])
        assert answer == original_answer and verify(assistant["content"], by_id[r["id"]]["answer"]) is True
        if r["variant"] == "no_think":
            assert system["content"] == "/no_think" and assistant["content"].startswith("<think></think>")
        elif r["variant"] == "budget":
            assert system["content"] == "/think" and len(words(reasoning)) == r["thinking_budget"] < r["length"]
        else:
            assert reasoning == original_reasoning


def test_traces_are_decontaminated_on_prompt_and_completion(problems, tmp_path):
    """The function curate uses: a trace quoting a test question in its prompt or its completion is dropped."""
    from pipelines.dedup.decontaminate import build_index, contamination_reasons
    from pipelines.reasoning.selection import decontaminate, trace_text
    from pipelines.select import decontamination_counts, summarize, tally

    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"question": p["messages"][-1]["content"]}) + "\n" for p in problems[:3:2]))
    index = build_index([f"bench={bench}:question"])
    leaked, clean = problems[0], problems[1]  # problems[0] is in the benchmark; problems[2] is quoted below
    quoting = sample(clean, 1)
    quoting["messages"][-1]["content"] += "\nA similar one: " + problems[2]["messages"][-1]["content"]

    out, records = [], {"sft_rejected": [], "rl_rejected": []}
    for samples in ([sample(leaked, 0), sample(leaked, 1)], [sample(clean, 0), quoting]):
        kept, dropped = decontaminate(samples, contamination_reasons([trace_text(t) for t in samples], index))
        out += dropped + (select_prompt(kept, CFG) if kept else [])
    for kind, record in out:
        records.setdefault(kind, []).append(record)
    reasons = Counter((kind, r.get("reason")) for kind, r in out if kind in ("sft_rejected", "rl_rejected"))
    assert reasons[("sft_rejected", "contaminated:bench")] == 3  # both samples of the leaked prompt, and `quoting`
    assert reasons[("rl_rejected", "contaminated:bench")] == 1  # the leaked prompt has no sample left
    assert [r["id"] for r in records["sft"]] == [f"{clean['prompt_id']}:0"]
    assert len(records["prompt"]) == 2 and {r["prompt_id"] for r in records["prompt"]} == {
        leaked["prompt_id"],
        clean["prompt_id"],
    }
    cfg = replace(CFG, decontaminate_against=[f"bench={bench}:question"])
    counts = tally([summarize(kind, rows) for kind, rows in records.items()])  # as the stage's writers report them
    assert decontamination_counts(cfg, counts) == {"bench": {"ngram": 13, "traces_removed": 3, "prompts_removed": 1}}


def test_shards_are_named_by_their_content(tmp_path):
    """No uuid names: the same rows give the same file name and bytes on every run; other rows another name."""
    from pipelines.reasoning.traces import write_shard
    from pipelines.select import SCHEMAS

    rows = [
        {
            "prompt_id": "p1",
            "prompt": [{"role": "user", "content": "1 + 1?"}],
            "answer": "2",
            "verifier": "math",
            "pass_rate": 0.5,
        }
    ]
    a, b = write_shard(tmp_path / "a", rows, SCHEMAS["rl"]), write_shard(tmp_path / "b", rows, SCHEMAS["rl"])
    assert a.name == b.name and a.read_bytes() == b.read_bytes()
    assert write_shard(tmp_path / "a", [rows[0] | {"answer": "3"}], SCHEMAS["rl"]).name != a.name
    assert not [p for p in (tmp_path / "a").iterdir() if not p.name.endswith(".parquet")]  # no temporary files left


def test_records_are_staged_a_file_per_block_not_per_block_kind_and_shard(tmp_path):
    """Issue 14: a Ray block of records goes to one staged file with a row group per (kind, shard) (a partitioned
    write made a file per block, kind and shard); a writer reads back exactly its (kind, shard)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.core import storage
    from pipelines.select import stage_records

    kinds = ["sft", "pair", "rl"]
    table = pa.Table.from_pylist(
        [{"kind": kinds[i % 3], "record": json.dumps({"i": i}), "shard": i % 4} for i in range(60)]
    )
    staged = str(tmp_path / "staged")
    held = [stage_records(table.slice(b * 30, 30), staged) for b in range(2)]
    assert [len(h) for h in held] == [12, 12]  # every (kind, shard) pair in each block
    files = sorted((tmp_path / "staged").glob("*.parquet"))
    assert len(files) == 2 and [pq.ParquetFile(f).num_row_groups for f in files] == [12, 12]
    mine = storage.read_equal(staged, kind="pair", shard=1)
    assert sorted(json.loads(r)["i"] for r in mine["record"].to_pylist()) == [1, 13, 25, 37, 49]
