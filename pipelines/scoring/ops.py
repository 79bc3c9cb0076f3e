"""Ray Data operators of `nanoforge quality`: scorer actors, bucket assignment, bucket-aware heuristic filters.

A scorer adds one float score column per batch; `EnsembleScorer` is the actor that runs them all.
A classifier is given by path and its kind is read from what is there:
  - a fastText model (`*.bin`/`*.ftz`, or a `train-quality-classifier` artifact holding `model.bin`):
    score = P(label), e.g. DCLM's `__label__hq`;
  - a Hugging Face sequence-classification model directory (`config.json`), e.g. FineWeb-Edu's classifier:
    a regression head (one logit) gives the logit itself (the 0-5 edu score); a k-class head gives the expected
    class index sum_i i * softmax_i.
Actors load the model once and score whole batches (GPU when the actor was given one).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.core import storage
from pipelines.core.config import ConfigError
from pipelines.curation.filters import build_filters
from pipelines.scoring.buckets import bucket_labels, ensemble_buckets

SHARD = "_shard"  # temporary column: the output shard of a document, from a hash of its id
WEIGHT = "_weight"  # temporary column: tokens (or bytes) per document, the percentile weights
HQ_LABEL = "__label__hq"  # fastText label of the high-quality class (train-quality-classifier trains it)
MODEL_FILE = "model.bin"  # the fastText model inside a train-quality-classifier artifact


def fasttext_line(text: str | None) -> str:
    """fastText reads one example per line: collapse all whitespace (newlines included) to single spaces."""
    return " ".join((text or "").split())


def hq_scores(model, texts: list[str | None], label: str = HQ_LABEL) -> np.ndarray:
    """P(`label`) per text, float32 in [0, 1], from a supervised fastText model."""
    labels, probs = model.predict([fasttext_line(t) for t in texts], k=-1)
    scores = [dict(zip(ls, ps, strict=True)).get(label, 0.0) for ls, ps in zip(labels, probs, strict=True)]
    return np.clip(np.asarray(scores, dtype=np.float32), 0.0, 1.0)  # fastText's softmax can return 1.00001


def classifier_kind(path: str | Path) -> str:
    """'fasttext' or 'hf' for a classifier path; a ConfigError naming the path otherwise."""
    p = Path(path)
    if p.is_file() and p.suffix in (".bin", ".ftz"):
        return "fasttext"
    if p.is_dir() and (p / MODEL_FILE).is_file():
        return "fasttext"
    if p.is_dir() and (p / "config.json").is_file():
        return "hf"
    raise ConfigError(
        f"classifier not found or not recognised: {path} (expected a fastText .bin/.ftz file, a "
        "train-quality-classifier artifact with model.bin, or a Hugging Face model directory with config.json)"
    )


def classifier_name(path: str | Path) -> str:
    """A column-safe name from the path: the file stem or the directory name."""
    p = Path(path)
    stem = p.stem if p.is_file() else p.name
    return re.sub(r"[^0-9A-Za-z_]+", "_", stem).strip("_").lower() or "classifier"


class FastTextScorer:
    """Adds `column` = P(`label`) under a fastText model."""

    def __init__(self, path: str, column: str, text_column: str = "text", label: str = HQ_LABEL):
        import fasttext

        p = Path(path)
        self.model = fasttext.load_model(str(p / MODEL_FILE if p.is_dir() else p))
        if label not in self.model.get_labels():
            raise ConfigError(f"{path}: fastText model has labels {self.model.get_labels()}, not {label!r}")
        self.column, self.text_column, self.label = column, text_column, label

    def __call__(self, batch: pa.Table) -> pa.Table:
        scores = hq_scores(self.model, batch.column(self.text_column).to_pylist(), self.label)
        return batch.append_column(self.column, pa.array(scores, pa.float32()))


PAD_MULTIPLE = 128  # HF classifiers see lengths rounded up to this many tokens (at most max_length)


class HFScorer:
    """Adds `column` = the score of a Hugging Face sequence-classification model (FineWeb-Edu style)."""

    def __init__(self, path: str, column: str, text_column: str = "text", max_length: int = 512, batch_size: int = 64):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype).to(self.device).eval()
        self.column, self.text_column = column, text_column
        self.max_length, self.batch_size = max_length, batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Scores in forward passes of a fixed shape, [batch_size, a multiple of PAD_MULTIPLE tokens]: documents of
        one padded length go together, a short group is filled with copies of its first row. A document's score is
        then the same bytes whatever documents Ray Data put in its batch. With shapes that varied (padding to the
        longest of a group, groups of any size) the kernels summed in another order and a score moved between runs
        (1e-9 to 1e-8 with the tests' tiny float32 models on CPU), enough to change the stored column and, rarely,
        a bucket. Cost: at most one partly filled pass per padded length and Ray Data batch."""
        texts = [t or "" for t in batch.column(self.text_column).to_pylist()]
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        encoded = [dict(zip(encoded.keys(), values, strict=True)) for values in zip(*encoded.values(), strict=True)]
        padded = [
            min(-(-max(len(e["input_ids"]), 1) // PAD_MULTIPLE) * PAD_MULTIPLE, self.max_length) for e in encoded
        ]
        scores = np.empty(len(texts), dtype=np.float32)
        for length in sorted(set(padded)):
            group = [i for i, n in enumerate(padded) if n == length]
            for start in range(0, len(group), self.batch_size):
                idx = group[start : start + self.batch_size]
                rows = [encoded[i] for i in idx]
                rows += rows[:1] * (self.batch_size - len(rows))  # fill: the same shape for every pass
                enc = self.tokenizer.pad(rows, padding="max_length", max_length=length, return_tensors="pt")
                with self.torch.inference_mode():
                    logits = self.model(**enc.to(self.device)).logits.float()[: len(idx)]  # [batch, num_labels]
                if logits.shape[-1] == 1:
                    score = logits[:, 0]
                else:
                    classes = self.torch.arange(logits.shape[-1], device=logits.device, dtype=logits.dtype)
                    score = logits.softmax(-1) @ classes
                scores[idx] = score.cpu().numpy()
        return batch.append_column(self.column, pa.array(scores, pa.float32()))


class EnsembleScorer:
    """The Ray Data actor: loads every classifier once and adds one `quality_score_<name>` per classifier.

    One actor pool for the whole ensemble, not one per classifier: on a small machine a pool per classifier can
    hold every CPU and starve the readers feeding them.
    """

    def __init__(self, specs: list[dict]):
        self.scorers = [(FastTextScorer if s["kind"] == "fasttext" else HFScorer)(**s["args"]) for s in specs]

    def __call__(self, batch: pa.Table) -> pa.Table:
        for scorer in self.scorers:
            batch = scorer(batch)
        return batch


def heuristic_verdicts(texts: list[str], ids: list[str], filters: tuple[str, ...]) -> list[tuple[str, str] | None]:
    """Per document, (filter, reason) of the first of curate's datatrove filters that drops it, else None.

    Same filter classes, defaults and reason slugs as `curate` (pipelines/curation/filters.py). C4Quality rewrites the
    text of documents it keeps (it removes lines); like curate, the rewritten text is kept (`texts` is updated in
    place).
    """
    from datatrove.data import Document

    blocks = build_filters(json.dumps([[name, {}] for name in filters]))
    verdicts: list[tuple[str, str] | None] = []
    for i, (text, doc_id) in enumerate(zip(texts, ids, strict=True)):
        doc, verdict = Document(text=text or "", id=str(doc_id)), None
        for name, block in blocks:
            result = block.filter(doc)
            keep, reason = result if isinstance(result, tuple) else (result, None)
            if not keep:
                verdict = (name, reason or f"{name}_rejected")
                break
        else:
            texts[i] = doc.text
        verdicts.append(verdict)
    return verdicts


def bucket_batch(
    batch: pa.Table, thresholds: dict, text_column: str, filters: tuple, filter_labels: tuple
) -> pa.Table:
    """Adds quality_bucket, quality_label, and `_stage`/`_reason` of a heuristic drop (null when kept).

    The heuristic filters see only the documents whose label is in `filter_labels` (Nemotron-CC: Low, Medium-Low
    and Medium), so a high-quality page they would drop is kept.
    """
    buckets = ensemble_buckets({n: batch[f"quality_score_{n}"].to_numpy() for n in thresholds}, thresholds)
    labels = bucket_labels(buckets)
    stages, reasons = [None] * len(batch), [None] * len(batch)
    if filters:
        rows = np.flatnonzero(np.isin(labels, filter_labels))
        texts = batch[text_column].to_pylist()
        ids = batch["id"].to_pylist()
        seen = [texts[i] for i in rows]
        for i, verdict in zip(rows, heuristic_verdicts(seen, [ids[i] for i in rows], filters), strict=True):
            if verdict:
                stages[i], reasons[i] = verdict
        for i, text in zip(rows, seen, strict=True):
            texts[i] = text
        column = batch.schema.get_field_index(text_column)
        batch = batch.set_column(column, text_column, pa.array(texts, pa.string()))
    batch = batch.append_column("quality_bucket", pa.array(buckets, pa.int8()))
    batch = batch.append_column("quality_label", pa.array(labels, pa.string()))
    batch = batch.append_column("_stage", pa.array(stages, pa.string()))
    return batch.append_column("_reason", pa.array(reasons, pa.string()))


def bucket_histogram(batch: pa.Table, thresholds: dict) -> dict:
    """One row per batch: documents and weight per bucket (20 each)."""
    buckets = ensemble_buckets({n: batch[f"quality_score_{n}"].to_numpy() for n in thresholds}, thresholds)
    weights = batch[WEIGHT].to_numpy()
    return {"docs": [np.bincount(buckets, minlength=20)], "weight": [np.bincount(buckets, weights, minlength=20)]}


def add_weight(batch: pa.Table, text_column: str) -> pa.Table:
    if "num_tokens" in batch.column_names:
        weight = pc.cast(batch["num_tokens"], pa.int64())
    else:
        weight = pc.cast(pc.binary_length(pc.fill_null(batch[text_column], "")), pa.int64())
    return batch.append_column(WEIGHT, weight)


def kept_rows(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_null(batch["_reason"])).drop_columns(["_stage", "_reason", WEIGHT])


def rejected_rows(batch: pa.Table, text_column: str) -> pa.Table:
    """Rows a heuristic filter dropped, as curate writes them (id, source, stage, reason, detail, url, text), plus
    their bucket, label and scores."""
    batch = batch.filter(pc.is_valid(batch["_reason"]))
    n = len(batch)

    def column(name: str) -> pa.Array:
        return batch[name] if name in batch.column_names else pa.nulls(n, pa.string())

    detail = pc.binary_join_element_wise("quality_label=", batch["quality_label"], "")
    scores = {name: batch[name] for name in batch.column_names if name.startswith("quality_score_")}
    return pa.table(
        {
            "id": batch["id"],
            "source": column("source"),
            "stage": batch["_stage"],
            "reason": batch["_reason"],
            "detail": detail,
            "url": column("url"),
            "text": batch[text_column],
            "quality_bucket": batch["quality_bucket"],
            "quality_label": batch["quality_label"],
            **scores,
        }
    )


def id_hash(ids: pa.Array, salt: str = "") -> np.ndarray:
    """uint64 hash of each `salt + id` (pandas' fixed-key SipHash: the same in every process and run)."""
    return pd.util.hash_array(np.asarray([f"{salt}{i}" for i in ids.to_pylist()], dtype=object), categorize=False)


def sample_batch(batch: pa.Table, fraction: float, seed: int) -> pa.Table:
    """The rows whose hash of (seed, id) falls in the first `fraction` of the hash range: the same sample for a
    seed however the documents are split into blocks (Ray's `random_sample` depends on the split)."""
    return batch.filter(pa.array(id_hash(batch["id"], f"{seed}:") / 2.0**64 < fraction))


def add_shard(batch: pa.Table, num_shards: int) -> pa.Table:
    """Adds `_shard`: the output file of each document, hash(id) mod num_shards (not the block it came in)."""
    return batch.append_column(SHARD, pa.array((id_hash(batch["id"]) % num_shards).astype(np.int64)))


def stage_block(batch: pa.Table, staged: str, num_shards: int) -> pa.Table:
    """Ray Data UDF over whole blocks: the block's rows with their shard (`add_shard`) into one staged file, a row
    group per shard (`storage.write_runs`), named by a hash of the block's ids (a retried task rewrites the same
    file); returns its row count. One file per block, where a partitioned write wrote one per block and shard."""
    if not len(batch):
        return pa.table({"rows": [0]})
    table = add_shard(batch, num_shards)
    storage.makedirs(staged)
    name = hashlib.sha1(id_hash(table["id"]).tobytes()).hexdigest()[:24]
    with storage.runs_writer(storage.join(staged, f"{name}.parquet"), table.schema, [SHARD]) as writer:
        storage.write_runs(writer, table, [SHARD])
    return pa.table({"rows": [len(table)]})


def write_part(row: dict, staged: str, out: str, text_column: str) -> dict:
    """Sort one shard's staged rows (its row groups of every staged file) by id (then text); write
    `part-KKKKK.parquet`, or nothing for a shard without rows. The bytes depend on the rows alone, not on how Ray
    split them into blocks and files."""
    shard = int(row["shard"])
    table = storage.read_equal(staged, **{SHARD: shard})
    if not len(table):
        return {"shard": shard, "docs": 0}
    table = table.drop_columns([SHARD])
    keys = [(c, "ascending") for c in ("id", text_column) if c in table.column_names]
    table = table.take(pc.sort_indices(table, sort_keys=keys)).combine_chunks()
    storage.makedirs(out)
    fs, path = storage.filesystem(storage.join(out, f"part-{shard:05d}.parquet"))
    pq.write_table(table, path, filesystem=fs)
    return {"shard": shard, "docs": len(table)}
