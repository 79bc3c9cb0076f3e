"""Benchmark decontamination on real data: GSM8K / MATH-500 test problems pasted into real web pages."""

from __future__ import annotations

import gzip
import json
import random

import pytest
from datapaths import shared_data

from pipelines.core.config import ConfigError
from pipelines.dedup.decontaminate import build_index, contamination_reasons, find_contamination, parse_spec


def _web_docs() -> list[str]:
    cc = shared_data("dolma_tests", "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz")
    c4 = shared_data("llamafactory_demo", "c4_demo.jsonl")
    docs = [json.loads(line)["text"] for line in gzip.open(cc, "rt")]
    return docs + [json.loads(line)["text"] for line in open(c4)]


def _problems(name: str, field: str) -> list[str]:
    return [json.loads(line)[field] for line in open(shared_data(name, "test.jsonl"))]


@pytest.fixture(scope="module")
def index():
    gsm8k, math500 = shared_data("gsm8k", "test.jsonl"), shared_data("math500", "test.jsonl")
    return build_index([f"gsm8k={gsm8k}:question", f"math500={math500}:problem"], n=13)


def _paste(doc: str, problem: str, rng: random.Random) -> str:
    """Paste a problem between two paragraphs of a web page, the way forums and homework sites quote them."""
    paragraphs = doc.split("\n")
    at = rng.randrange(len(paragraphs) + 1)
    lead = rng.choice(["Question: ", "Problem 3. ", "Can anyone help with this one?\n", ""])
    tail = rng.choice(["\nAnswer: see below.", "\nThanks in advance!", ""])
    return "\n".join(paragraphs[:at] + [lead + problem + tail] + paragraphs[at:])


def test_planted_problems_are_all_found_and_clean_pages_kept(index):
    docs = _web_docs()
    rng = random.Random(0)
    gsm8k, math500 = _problems("gsm8k", "question"), _problems("math500", "problem")
    planted = [("gsm8k", p) for p in rng.sample(gsm8k, 300)] + [("math500", p) for p in math500]
    texts = [_paste(rng.choice(docs), p, rng) for _, p in planted]

    clean = find_contamination(docs, index)
    found = find_contamination(texts, index)

    assert clean == [None] * len(docs), "a real web page was flagged as contaminated"
    # every MATH-500 problem is findable except the ones the index reports as unmatchable (under 8 words
    # after normalization, or only numbers: "Evaluate $\log_264$." -> "evaluate log 0")
    matchable = index.stats["math500"]["items"] - index.stats["math500"]["unmatchable"]
    assert index.stats["gsm8k"]["unmatchable"] == 0 and 0 < index.stats["math500"]["unmatchable"] <= 20
    missed = [p for (name, p), f in zip(planted, found, strict=True) if f != name]
    assert sum(f == "math500" for f in found) == matchable
    assert len(missed) == index.stats["math500"]["unmatchable"]
    assert all(len(p.split()) < 13 for p in missed)


def test_prompts_and_traces_are_checked_the_same_way(index):
    problem = _problems("math500", "problem")[7]
    prompts = [
        "Write a haiku about the sea.",
        f"Solve the following problem and put the answer in \\boxed{{}}.\n\n{problem}",
        "<think>The user asks: " + problem.upper() + " Let me think.</think>The answer is 3.",
    ]
    assert contamination_reasons(prompts, index) == [None, "contaminated:math500", "contaminated:math500"]


def test_number_changes_do_not_hide_a_problem(index):
    """GSM-Hard is GSM8K with the numbers replaced; numbers normalize to 0, so it still matches."""
    hard = [json.loads(line)["input"] for line in open(shared_data("gsm_hard", "test.jsonl"))][:50]
    assert sum(f == "gsm8k" for f in find_contamination(hard, index)) >= 48


def test_local_formats_and_spec_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    questions = _problems("gsm8k", "question")[:5]
    pq.write_table(pa.table({"q": questions}), tmp_path / "set.parquet")
    (tmp_path / "set.json").write_text(json.dumps([{"q": [q]} for q in questions]))
    for name in ("set.parquet", "set.json"):
        index = build_index([f"mine={tmp_path / name}:q"])
        assert find_contamination(questions, index) == ["mine"] * 5

    assert parse_spec("gsm8k=openai/gsm8k@main#test:question") == ("gsm8k", "openai/gsm8k@main#test", ["question"])
    with pytest.raises(ConfigError, match="expected NAME=PATH:FIELD"):
        build_index(["gsm8k"])
    with pytest.raises(ConfigError, match="not found"):
        build_index([f"x={tmp_path / 'missing.jsonl'}:q"])
    with pytest.raises(ConfigError, match="row 0 has no field 'question'"):
        build_index([f"x={tmp_path / 'set.parquet'}:question"])


def test_hub_ids_go_through_datasets(monkeypatch):
    """The Hub cannot be reached here: check the id, config and split reach `datasets.load_dataset`."""
    import datasets

    calls = []

    def fake_load_dataset(repo, config, split):
        calls.append((repo, config, split))
        return [{"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    index = build_index(["gsm8k=openai/gsm8k@main#test:question"])
    assert calls == [("openai/gsm8k", "main", "test")] and index.stats["gsm8k"]["ngrams"] > 0


def test_hashes_are_datatrove_ngram_hashes(index, tmp_path):
    """An index exported for datatrove's NGramsDecontFilter flags the same documents (13-grams)."""
    from datatrove.data import Document
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter

    from pipelines.dedup.decontaminate import export_datatrove

    export_datatrove(index, tmp_path)
    dt = NGramsDecontFilter(str(tmp_path), config=NGramsDecontConfig(n_grams=13))
    rng = random.Random(1)
    docs = _web_docs()[:20]
    texts = docs + [_paste(d, p, rng) for d, p in zip(docs, _problems("gsm8k", "question"), strict=False)]
    theirs = [dt.filter(Document(text=t, id=str(i))) is not True for i, t in enumerate(texts)]
    assert theirs == [f is not None for f in find_contamination(texts, index)]
