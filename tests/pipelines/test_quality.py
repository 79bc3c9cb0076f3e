"""train-quality-classifier on real text, and the quality stage end to end (fastText + a HF regression head)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datapaths import shared_data

from pipelines import quality
from pipelines import train_quality_classifier as quality_classifier
from pipelines.core.artifacts import read_manifest
from pipelines.core.config import ConfigError
from pipelines.scoring.buckets import bucket_labels, digitize, weighted_percentiles
from pipelines.scoring.ops import heuristic_verdicts, hq_scores
from pipelines.train_quality_classifier import roc_auc

SMALL_FASTTEXT = ["--epoch", "15", "--dim", "16", "--bucket", "200000"]  # fewer buckets: NaN on this data


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path, n: int | None = None) -> list[dict]:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f][:n]


def write_documents(root: Path, rows: list[dict], files: int = 2) -> Path:
    """A documents artifact as curate writes it: documents/part-*.parquet with the contract's columns."""
    (root / "documents").mkdir(parents=True)
    table = pa.Table.from_pylist(
        [{"source": "test", "url": None, "metadata": "{}", "lang": "en", "lang_score": 1.0, **r} for r in rows]
    )
    step = -(-len(rows) // files)
    for i in range(files):
        pq.write_table(table.slice(i * step, step), root / "documents" / f"part-{i:05d}.parquet")
    return root


@pytest.fixture(scope="module")
def texts() -> dict[str, list[str]]:
    """Real text: high-quality (math solutions, Wikipedia) and web pages (two different crawls)."""
    wiki = [line.strip() for line in shared_data("llamafactory_demo", "wiki_demo.txt").open() if line.strip()]
    return {
        "gsm8k": [r["question"] + "\n" + r["answer"] for r in read_jsonl(shared_data("gsm8k", "test.jsonl"), 400)],
        "math500": [r["problem"] + "\n\n" + r["solution"] for r in read_jsonl(shared_data("math500", "test.jsonl"))],
        "wiki_train": wiki[:20],
        "wiki_heldout": wiki[20:],
        "dolma_cc": [
            r["text"]
            for r in read_jsonl(shared_data("dolma_tests", "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"))
        ],
        "c4": [r["text"] for r in read_jsonl(shared_data("llamafactory_demo", "c4_demo.jsonl"))],
    }


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, texts) -> Path:
    """fastText trained on GSM8K + Wikipedia (high quality) vs a Common Crawl WARC shard's pages (web)."""
    tmp = tmp_path_factory.mktemp("clf")
    pos = jsonl(
        tmp / "pos.jsonl", [{"question": t} for t in texts["gsm8k"]] + [{"text": t} for t in texts["wiki_train"]]
    )
    neg = jsonl(tmp / "neg.jsonl", [{"text": t} for t in texts["dolma_cc"]])
    out = tmp / "classifier"
    argv = ["--positive_paths", str(pos), "--negative_paths", str(neg), "--text_fields", "text", "question"]
    assert quality_classifier.main([*argv, "--output_dir", str(out), *SMALL_FASTTEXT]) == 0
    return out


def test_roc_auc_counts_pairs():
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of the 4 pairs are ordered right
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert roc_auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5  # a tie counts half


def test_classifier_separates_heldout_high_quality_from_web_text(classifier, texts):
    import fasttext

    manifest = json.loads((classifier / "manifest.json").read_text())
    web_docs = sum(1 for t in texts["dolma_cc"] if t.strip())  # empty pages are skipped
    assert manifest["counts"]["read"] == {"__label__hq": 420, "__label__cc": web_docs}
    assert manifest["counts"]["train"] + manifest["counts"]["heldout"] == 2 * manifest["counts"]["used_per_class"]
    assert manifest["metrics"]["heldout_roc_auc"] > 0.8
    # Held out by source, not just by row: MATH-500 solutions and unseen Wikipedia articles vs C4 pages.
    model = fasttext.load_model(str(classifier / "model.bin"))
    hq = texts["math500"][:150] + texts["wiki_heldout"]
    web = texts["c4"][:150]
    scores = hq_scores(model, hq + web)
    is_hq = np.array([True] * len(hq) + [False] * len(web))
    # Buckets use only the ranking (percentiles), so the test is on ranking: AUC 0.5 is chance. (At a 0.5 cut C4
    # pages, already filtered by C4's heuristics, often pass as "hq": the calibration does not transfer.)
    assert roc_auc(scores, is_hq) > 0.8, "no better than chance on held-out real text"


def test_train_quality_classifier_skips_unreadable_records_and_names_them(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text(
        "".join(json.dumps({"text": f"a clean sentence number {i} about rivers."}) + "\n" for i in range(20))
    )
    bad = tmp_path / "bad.jsonl.gz"
    lines = [json.dumps({"text": f"web page {i} buy now click here"}).encode() for i in range(20)]
    lines[3] = b"not json"
    lines[5] = b'{"text": "caf\xe9 latin-1 bytes"}'
    lines[7] = b"[1, 2]"
    bad.write_bytes(gzip.compress(b"\n".join(lines) + b"\n")[:-12])  # truncated: the end of the stream is lost
    out = tmp_path / "o"
    argv = ["--positive_paths", str(good), "--negative_paths", str(bad), "--output_dir", str(out)]
    argv += [*SMALL_FASTTEXT, "--heldout_fraction", "0.2"]
    assert quality_classifier.main(argv) == 0
    manifest = read_manifest(out)
    problems = manifest["unreadable_records"]
    assert any(p.startswith(f"{bad}:4: not valid JSON") for p in problems)
    assert any(p.startswith(f"{bad}:6: invalid UTF-8") for p in problems)
    assert any(p.startswith(f"{bad}:8: expected a JSON object") for p in problems)
    assert any("unreadable (EOFError" in p for p in problems), problems
    assert manifest["counts"]["unreadable"] == len(problems) == 4
    assert manifest["counts"]["read"]["__label__cc"] < 17  # the lines after the cut are gone, and said so
    assert f"skipped unreadable record {bad}:4" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="not found"):
        quality_classifier.main(["--positive_paths", str(tmp_path / "missing.jsonl"), *argv[2:]])


def tiny_edu_classifier(root: Path, texts: list[str]) -> Path:
    """A random FineWeb-Edu-style model: BERT with a one-logit regression head and a local tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from sft.tokenizer import train_tokenizer

    tok = train_tokenizer(texts, 300)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=512,
        num_labels=1,  # regression, like HuggingFaceFW/fineweb-edu-classifier
        pad_token_id=tok.pad_token_id,
    )
    BertForSequenceClassification(config).save_pretrained(root)
    tok.save_pretrained(root)
    return root


def test_hf_scores_do_not_depend_on_the_other_documents_in_the_batch(tmp_path, texts):
    """A document's HF score is the same float32 bytes alone, in the whole batch or in any other group (forward passes
    of a fixed shape): Ray Data groups documents differently on every run, and quality's output must not move."""
    from pipelines.scoring.ops import HFScorer

    docs = texts["c4"][:24] + texts["math500"][:12] + ["", "short"]
    scorer = HFScorer(str(tiny_edu_classifier(tmp_path / "edu", docs)), "s", max_length=256, batch_size=8)

    def scores(group: list[str]) -> np.ndarray:
        return scorer(pa.table({"text": group})).column("s").to_numpy()

    together = scores(docs)
    order = np.random.default_rng(0).permutation(len(docs))
    assert scores([docs[i] for i in order]).tobytes() == together[order].tobytes()
    assert scores(docs[5:16]).tobytes() == together[5:16].tobytes()
    assert np.concatenate([scores([d]) for d in docs[:6]]).tobytes() == together[:6].tobytes()


@pytest.mark.slow
def test_quality_stage_buckets_documents_with_an_ensemble(ray_local, tmp_path, classifier, texts):
    math, web = texts["math500"][:40], texts["c4"][:40]
    rows = [{"id": f"math-{i}", "text": t} for i, t in enumerate(math)] + [
        {"id": f"c4-{i}", "text": t} for i, t in enumerate(web)
    ]
    corpus = write_documents(tmp_path / "corpus", rows)
    edu = tiny_edu_classifier(tmp_path / "edu", math + web)
    out = tmp_path / "quality"
    argv = [
        "--input_path",
        str(corpus),
        "--classifiers",
        str(classifier),
        str(edu),
        "--classifier_names",
        "dclm",
        "edu",
    ]
    argv += ["--heuristic_filters", "gopher_quality", "--hf_max_length", "128", "--output_dir", str(out)]
    assert quality.main(argv) == 0

    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["input"] == 80 == counts["kept"] + sum(counts["rejected"].values())  # nothing lost
    docs = pq.read_table(out / "documents").to_pandas()
    rejected = pq.read_table(out / "rejected").to_pandas() if counts["rejected"] else None
    assert len(docs) == counts["kept"]

    # Thresholds are the byte-weighted percentiles of each classifier's scores over all documents (sample 1.0).
    saved = json.loads((out / "thresholds.json").read_text())["classifiers"]
    scored = pd.concat([docs, rejected]) if rejected is not None else docs
    weights = scored["text"].str.encode("utf-8").str.len().to_numpy()
    for name in ("dclm", "edu"):
        scores = scored[f"quality_score_{name}"].to_numpy()
        np.testing.assert_allclose(saved[name]["thresholds"], weighted_percentiles(scores, weights))
    if rejected is not None:
        assert set(rejected["stage"]) == {"gopher_quality"}
        # heuristic filters saw only Low / Medium-Low / Medium documents
        assert set(rejected["quality_label"]) <= {"Low", "Medium-Low", "Medium"}
    everything = scored
    # bucket = max over classifiers of the digitized score; label from the bucket
    per = [digitize(everything[f"quality_score_{n}"].to_numpy(), np.array(saved[n]["thresholds"])) for n in saved]
    assert everything["quality_bucket"].tolist() == np.max(per, axis=0).tolist()
    assert everything["quality_label"].tolist() == bucket_labels(everything["quality_bucket"].to_numpy()).tolist()
    # The trained classifier ranks math solutions above web pages.
    ft = digitize(everything["quality_score_dclm"].to_numpy(), np.array(saved["dclm"]["thresholds"]))
    is_math = everything["id"].str.startswith("math").to_numpy()
    assert ft[is_math].mean() > ft[~is_math].mean() + 3
    # Nemotron-CC's point: high buckets skip the heuristic filters, so pages Gopher would drop survive there.
    top = everything[everything["quality_label"].isin(["High", "Medium-High"])]
    verdicts = heuristic_verdicts(top["text"].tolist(), top["id"].tolist(), ("gopher_quality",))
    assert any(verdicts), "expected a high-bucket document that gopher_quality alone would have dropped"
    assert counts["by_label"]["High"] + counts["by_label"]["Medium-High"] >= len(top)

    # A second corpus bucketed with the first corpus's thresholds.
    second = write_documents(tmp_path / "second", rows[::3], files=1)
    argv2 = ["--input_path", str(second), "--thresholds_path", str(out), "--output_dir", str(tmp_path / "q2")]
    assert quality.main([*argv2, "--classifiers", str(classifier), str(edu), "--classifier_names", "dclm", "edu"]) == 0
    reused = json.loads((tmp_path / "q2" / "thresholds.json").read_text())
    assert reused["classifiers"] == saved and reused["reused_from"] == str(out)
    again = pq.read_table(tmp_path / "q2" / "documents").to_pandas().set_index("id")
    first = everything.set_index("id").loc[again.index]
    for n in saved:  # same scores (up to batch padding noise), digitized with the first corpus's thresholds
        np.testing.assert_allclose(again[f"quality_score_{n}"], first[f"quality_score_{n}"], atol=1e-4)
    per = [digitize(again[f"quality_score_{n}"].to_numpy(), np.array(saved[n]["thresholds"])) for n in saved]
    assert again["quality_bucket"].tolist() == np.max(per, axis=0).tolist()


def test_quality_config_errors(tmp_path, classifier):
    corpus = write_documents(tmp_path / "c", [{"id": "a", "text": "hello world"}], files=1)
    base = ["--output_dir", str(tmp_path / "o")]
    with pytest.raises(ConfigError, match="no documents"):
        quality.main(["--input_path", str(tmp_path), "--classifiers", str(classifier), *base])
    with pytest.raises(ConfigError, match="not found or not recognised"):
        quality.main(["--input_path", str(corpus), "--classifiers", str(tmp_path / "nope"), *base])
    with pytest.raises(ConfigError, match="unknown filter"):
        quality.main(
            ["--input_path", str(corpus), "--classifiers", str(classifier), "--heuristic_filters", "x", *base]
        )
    with pytest.raises(ConfigError, match="thresholds for"):
        quality.load_thresholds(str(_thresholds(tmp_path, {"other": {"thresholds": [0.0] * 19}})), ["dclm"])


def _thresholds(tmp_path: Path, classifiers: dict) -> Path:
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps({"classifiers": classifiers}))
    return path


def test_a_diverged_fasttext_run_is_retried_at_half_the_learning_rate(tmp_path, monkeypatch, caplog):
    real, rates = quality_classifier._train_supervised, []

    def diverge_once(train_file, model_file, **params):
        rates.append(params["lr"])
        if len(rates) == 1:
            raise RuntimeError("Encountered NaN.")
        return real(train_file, model_file, **params)

    monkeypatch.setattr(quality_classifier, "_train_supervised", diverge_once)
    good = jsonl(tmp_path / "good.jsonl", [{"text": f"a clean sentence number {i} about rivers."} for i in range(20)])
    web = jsonl(tmp_path / "web.jsonl", [{"text": f"web page {i} buy now click here"} for i in range(20)])
    out = tmp_path / "o"
    argv = ["--positive_paths", str(good), "--negative_paths", str(web), "--output_dir", str(out), "--lr", "0.2"]
    assert quality_classifier.main([*argv, *SMALL_FASTTEXT]) == 0
    assert rates == [0.2, 0.1]
    assert read_manifest(out)["lr_used"] == 0.1 and (out / "model.bin").is_file()
    assert "diverged (NaN) at lr=0.2; retrying at lr=0.1" in caplog.text  # a logged warning


@pytest.mark.slow
def test_quality_and_mix_are_byte_identical_when_run_twice(ray_local, tmp_path, classifier, texts):
    """Same input + config + seed -> the same files, byte for byte: shards named by a hash of ids, rows sorted, the
    threshold sample by a hash of (seed, id), HF scores from forward passes of a fixed shape (Ray Data's batches of 7
    documents differ from run to run)."""
    from pipelines import mix
    from tests.pipelines.test_synth import artifact_bytes

    rows = [{"id": f"math-{i}", "text": t} for i, t in enumerate(texts["math500"][:30])]
    rows += [{"id": f"c4-{i}", "text": t} for i, t in enumerate(texts["c4"][:30])]
    corpus = write_documents(tmp_path / "corpus", rows, files=3)
    scored, blend = tmp_path / "quality", tmp_path / "blend"
    edu = tiny_edu_classifier(tmp_path / "edu", [r["text"] for r in rows])
    quality_argv = [
        "--input_path",
        str(corpus),
        "--classifiers",
        str(classifier),
        str(edu),
        "--output_dir",
        str(scored),
    ]
    quality_argv += ["--classifier_names", "dclm", "edu", "--hf_max_length", "128", "--hf_batch_size", "4"]
    quality_argv += [
        "--heuristic_filters",
        "gopher_quality",
        "--threshold_sample_fraction",
        "0.5",
        "--batch_size",
        "7",
    ]
    mix_config = {
        "input_paths": [str(scored)],
        "sources": [
            {"name": "high", "labels": ["High", "Medium-High", "Medium"]},
            {"name": "rest", "buckets": [*range(7)]},
        ],
        "phases": [{"name": "p1", "fraction": 1.0, "weights": {"high": 0.5, "rest": 0.5}}],
        "total_tokens": 4000,
        "on_shortfall": "report",
        "docs_per_shard": 8,
        "batch_size": 5,
        "output_dir": str(blend),
    }
    (tmp_path / "mix.yaml").write_text(json.dumps(mix_config))  # JSON is YAML
    runs = []
    for _ in range(2):  # fresh runs at the same paths (--force would change the config)
        shutil.rmtree(scored, ignore_errors=True), shutil.rmtree(blend, ignore_errors=True)
        assert quality.main(quality_argv) == 0
        assert mix.main(["--config", str(tmp_path / "mix.yaml")]) == 0
        runs.append((artifact_bytes(scored), artifact_bytes(blend)))
    assert len([p for p in runs[0][0] if p.startswith("documents/")]) == 3  # one shard per input file
    assert json.loads(runs[0][0]["thresholds.json"])["sample_docs"] < 60
    assert any(p.startswith("p1/part-") for p in runs[0][1])
    assert runs[0] == runs[1]


def test_quality_stages_a_file_per_block_not_per_block_and_shard(tmp_path):
    """Issue 14: each Ray block goes to one staged file with a row group per shard (a partitioned write made a file
    per block and shard); a shard's writer reads its row groups of every file and writes its rows sorted by id, and
    a shard without rows writes nothing."""
    from pipelines.scoring.ops import stage_block, write_part

    rows = [{"id": f"doc-{i}", "text": f"text {i}"} for i in range(200)]
    staged, out = str(tmp_path / "staged"), str(tmp_path / "out")
    for b in range(5):  # 5 blocks, each spread over every shard
        assert stage_block(pa.Table.from_pylist(rows[b::5]), staged, num_shards=4)["rows"].to_pylist() == [40]
    files = sorted((tmp_path / "staged").rglob("*.parquet"))
    assert len(files) == 5 and [pq.ParquetFile(f).num_row_groups for f in files] == [4] * 5
    written = [write_part({"shard": k}, staged, out, "text") for k in range(5)]
    assert sum(w["docs"] for w in written) == 200 and written[4]["docs"] == 0
    parts = sorted((tmp_path / "out").glob("*.parquet"))
    assert [p.name for p in parts] == [f"part-{k:05d}.parquet" for k in range(4)]
    ids = [pq.read_table(p)["id"].to_pylist() for p in parts]
    assert all(mine == sorted(mine) for mine in ids) and sorted(sum(ids, [])) == sorted(r["id"] for r in rows)
