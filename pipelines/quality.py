"""Score documents with quality classifiers and assign Nemotron-CC quality buckets (arXiv 2412.02595).

For each classifier: score every document (Ray Data actor pools; batch inference, GPU when present), compute
token-weighted percentile thresholds at 5, 10, ..., 95 on a sample, and digitize each score into 0-19. A
document's `quality_bucket` is the max over classifiers; `quality_label` is High (19), Medium-High (18),
Medium (12-17), Medium-Low (7-11) or Low (0-6). Weights are the `num_tokens` column when present, else the
UTF-8 byte length (what NVIDIA's recipe uses). Thresholds go to `thresholds.json`; pass that file (or this
artifact) as `thresholds_path` to bucket a second corpus with the same cuts.

Nemotron-CC applies the heuristic filters only to the Low/Medium-Low/Medium buckets, so high-quality pages
they would wrongly drop survive. To do that, run curate with `filters: []` and name the filters here in
`heuristic_filters` (same datatrove classes and reason slugs as curate): they see only documents whose label is
in `heuristic_filter_labels`; what they drop goes to `rejected/` (`input == kept + rejected`).

    nanoforge quality --config pipelines/configs/quality_demo.yaml
    # on a cluster (GPU actors for the Hugging Face classifiers):
    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        nanoforge quality --config pipelines/configs/quality_nemotron_cc.yaml

Same input + config + seed gives the same bytes: the threshold sample is by a hash of (seed, id), and each output
shard `part-KKKKK.parquet` (as many as input files) holds the documents whose id hashes to K, sorted by id.
Scores of a HF classifier move slightly with batch padding, so byte-identity holds for fastText classifiers.

Output: `documents/*.parquet` (input columns + `quality_score_<classifier>`, `quality_bucket`, `quality_label`),
`rejected/*.parquet`, `thresholds.json`, and per-bucket document and token counts in the manifest.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core import storage
from pipelines.core.artifacts import Artifact
from pipelines.core.config import ConfigError, parse, to_dict
from pipelines.core.runtime import ray_session
from pipelines.curation.filters import FILTER_NAMES, check_filters
from pipelines.scoring.buckets import LABELS, PERCENTILES, bucket_labels, weighted_percentiles
from pipelines.scoring.ops import (
    WEIGHT,
    EnsembleScorer,
    add_weight,
    bucket_batch,
    bucket_histogram,
    classifier_kind,
    classifier_name,
    kept_rows,
    rejected_rows,
    sample_batch,
    stage_block,
    write_part,
)


@dataclass
class QualityConfig:
    input_path: str = field(default="", metadata={"help": "Documents artifact (a dir with documents/*.parquet)."})
    classifiers: list[str] = field(
        default_factory=list,
        metadata={"help": "Classifier paths: fastText .bin / classifier artifact / HF model dir."},
    )
    classifier_names: list[str] = field(
        default_factory=list, metadata={"help": "Names (column suffixes), one per classifier; default: from paths."}
    )
    fasttext_label: str = field(
        default="__label__hq", metadata={"help": "fastText label whose probability is scored."}
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the document text."})
    thresholds_path: str | None = field(
        default=None, metadata={"help": "Reuse thresholds from a quality artifact (or its thresholds.json)."}
    )
    threshold_sample_fraction: float = field(
        default=1.0, metadata={"help": "Share of documents sampled to compute thresholds (NVIDIA: 0.01)."}
    )
    threshold_sample_max_docs: int = field(
        default=2_000_000,
        metadata={"help": "At most about this many sampled documents reach the driver (bounds its memory)."},
    )
    heuristic_filters: list[str] = field(
        default_factory=list,
        metadata={
            "help": f"curate's datatrove filters, run only on heuristic_filter_labels: {', '.join(FILTER_NAMES)}."
        },
    )
    heuristic_filter_labels: list[str] = field(
        default_factory=lambda: ["Low", "Medium-Low", "Medium"], metadata={"help": "Labels the heuristic filters see."}
    )
    batch_size: int = field(default=256, metadata={"help": "Documents per Ray Data batch."})
    hf_batch_size: int = field(
        default=64, metadata={"help": "Documents per forward pass of a HF classifier (every pass has this many rows)."}
    )
    hf_max_length: int = field(default=512, metadata={"help": "Tokens per document seen by a HF classifier."})
    num_workers: int = field(default=2, metadata={"help": "Max scoring actors (each runs every classifier)."})
    num_gpus: float = field(
        default=-1, metadata={"help": "GPUs per scoring actor when a classifier is HF; -1: 1 if the cluster has GPUs."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the threshold sample."})
    output_dir: str = field(default="runs/quality", metadata={"help": "Artifact directory to write."})
    force: bool = field(default=False, metadata={"help": "Rerun even if the artifact is up to date."})
    address: str | None = field(default=None, metadata={"help": "Ray address (default: embedded local Ray)."})


def parse_args(argv: list[str] | None = None) -> QualityConfig:
    return parse(QualityConfig, argv=argv)


def load_thresholds(path: str, names: list[str]) -> dict[str, np.ndarray]:
    p = path if path.endswith(".json") else storage.join(path, "thresholds.json")
    if not storage.exists(p):
        raise ConfigError(f"thresholds_path {path}: no thresholds.json there (it is written by `nanoforge quality`)")
    saved = storage.read_json(p)["classifiers"]
    missing = [n for n in names if n not in saved]
    if missing:
        raise ConfigError(f"{p} has thresholds for {sorted(saved)}, not for {missing}; set classifier_names to match")
    return {n: np.asarray(saved[n]["thresholds"]) for n in names}


def scorer_specs(cfg: QualityConfig, names: list[str]) -> list[dict]:
    specs = []
    for path, name in zip(cfg.classifiers, names, strict=True):
        args = {"path": str(path), "column": f"quality_score_{name}", "text_column": cfg.text_column}
        if classifier_kind(path) == "fasttext":
            specs.append({"kind": "fasttext", "args": {**args, "label": cfg.fasttext_label}})
        else:
            specs.append(
                {"kind": "hf", "args": {**args, "max_length": cfg.hf_max_length, "batch_size": cfg.hf_batch_size}}
            )
    return specs


def write_empty(cfg: QualityConfig, docs_dir: str, names: list[str], tmp: str) -> None:
    """No input documents (every page was dropped upstream): documents/ with a full run's columns and no rows.

    The batch functions run on the empty table in the driver, so the schema is the one they write."""
    first = storage.glob(storage.join(docs_dir, "*.parquet"))[0]
    table = add_weight(storage.read_table(first).slice(0, 0), cfg.text_column)
    table = EnsembleScorer(scorer_specs(cfg, names))(table)
    thresholds = {n: np.zeros(len(PERCENTILES)) for n in names}
    table = kept_rows(bucket_batch(table, thresholds, cfg.text_column, (), ()))
    storage.makedirs(storage.join(tmp, "documents"))
    storage.write_parquet(table, storage.join(tmp, "documents", "part-00000.parquet"))


def score_documents(cfg: QualityConfig, docs_dir: str, names: list[str], out: str) -> None:
    """Read documents, add `_weight` and one `quality_score_<name>` column per classifier, write to `out`."""
    import ray

    ds = ray.data.read_parquet(docs_dir)
    ds = ds.map_batches(add_weight, fn_kwargs={"text_column": cfg.text_column}, batch_format="pyarrow")
    specs = scorer_specs(cfg, names)
    gpus = cfg.num_gpus if cfg.num_gpus >= 0 else float(ray.cluster_resources().get("GPU", 0) > 0)
    resources = {"num_gpus": gpus} if gpus and any(s["kind"] == "hf" for s in specs) else {"num_cpus": 1}
    ds = ds.map_batches(
        EnsembleScorer,
        fn_constructor_kwargs={"specs": specs},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.num_workers),
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        **resources,
    )
    ds.write_parquet(out)


def sample_thresholds(scores, cfg: QualityConfig, names: list[str]) -> tuple[dict[str, np.ndarray], int]:
    """Token-weighted percentile thresholds per classifier on a sample of the scored documents: a share of
    `threshold_sample_fraction`, lowered so that about `threshold_sample_max_docs` at most reach the driver. The
    sample is by a hash of (seed, id), so it is the same documents on every run."""
    import ray

    fraction = min(cfg.threshold_sample_fraction, cfg.threshold_sample_max_docs / max(scores.count(), 1))
    if fraction < 1:
        scores = scores.map_batches(
            sample_batch, fn_kwargs={"fraction": fraction, "seed": cfg.seed}, batch_format="pyarrow"
        )
    scores = scores.drop_columns(["id"])
    refs = scores.to_arrow_refs()
    sample = pa.concat_tables(ray.get(refs)) if refs else pa.table({})
    if len(sample) == 0:
        raise ConfigError(
            f"the threshold sample is empty; raise threshold_sample_fraction={cfg.threshold_sample_fraction}"
        )
    weights = sample[WEIGHT].to_numpy()
    return {n: weighted_percentiles(sample[f"quality_score_{n}"].to_numpy(), weights) for n in names}, len(sample)


def histogram(scores, thresholds: dict) -> tuple[np.ndarray, np.ndarray]:
    """Documents and weight per bucket (20 each) over all scored documents."""
    rows = scores.map_batches(bucket_histogram, fn_kwargs={"thresholds": thresholds}, batch_format="pyarrow")
    rows = rows.take_all()
    return np.sum([r["docs"] for r in rows], axis=0).astype(int), np.sum([r["weight"] for r in rows], axis=0)


def write_sharded(ds, num_shards: int, staged: str, out: str, text_column: str) -> None:
    """Write `ds` as `out/part-KKKKK.parquet`, a document's shard chosen by a hash of its id and its rows sorted by
    id: the same files, byte for byte, however Ray split the work (its own file names are uuids). Each block goes to
    one file under `staged/` with a row group per shard (`stage_block`), then one task per shard reads its row
    groups, sorts and writes them: staged files grow with the blocks, not blocks x shards; nothing is gathered on
    the driver."""
    import ray

    storage.remove(staged), storage.remove(out)  # a resumed run starts this pass over: no rows twice
    kwargs = {"staged": str(staged), "num_shards": num_shards}
    ds.map_batches(stage_block, fn_kwargs=kwargs, batch_size=None, batch_format="pyarrow").materialize()
    kwargs = {"staged": str(staged), "out": str(out), "text_column": text_column}
    ray.data.from_items([{"shard": k} for k in range(num_shards)]).map(write_part, fn_kwargs=kwargs).take_all()
    storage.remove(staged)


def write_buckets(cfg: QualityConfig, scored: str, thresholds: dict, tmp: str) -> tuple[int, dict[str, int]]:
    """Write documents/ with buckets and labels (and rejected/ when heuristic filters run); (kept, reasons).
    As many shards as input files, each named by its index (see write_sharded)."""
    import ray

    num_shards = len(storage.glob(storage.join(cfg.input_path, "documents", "*.parquet")))
    filters = tuple(cfg.heuristic_filters)
    bucketed = ray.data.read_parquet(scored).map_batches(
        bucket_batch,
        fn_kwargs={
            "thresholds": thresholds,
            "text_column": cfg.text_column,
            "filters": filters,
            "filter_labels": tuple(cfg.heuristic_filter_labels),
        },
        batch_format="pyarrow",
    )
    if filters:  # two outputs from one pass: hold it in the object store (Ray spills to disk when large)
        bucketed = bucketed.materialize()
        rejected = bucketed.map_batches(
            rejected_rows, fn_kwargs={"text_column": cfg.text_column}, batch_format="pyarrow"
        )
        write_sharded(rejected, num_shards, storage.join(tmp, "staged"), storage.join(tmp, "rejected"), "text")
    kept_ds = bucketed.map_batches(kept_rows, batch_format="pyarrow")
    write_sharded(kept_ds, num_shards, storage.join(tmp, "staged"), storage.join(tmp, "documents"), cfg.text_column)
    reasons = {}
    if rejected_files := storage.glob(storage.join(tmp, "rejected", "*.parquet")):
        table = pa.concat_tables([storage.read_table(f, columns=["stage", "reason"]) for f in rejected_files])
        keys = pc.binary_join_element_wise(table["stage"], table["reason"], ":")
        counted = [(c["values"], c["counts"]) for c in keys.value_counts().to_pylist()]
        reasons = dict(sorted(counted, key=lambda kv: (-kv[1], kv[0])))
    kept = sum(
        m.num_rows for m in storage.parquet_metadata_many(storage.glob(storage.join(tmp, "documents", "*.parquet")))
    )
    return kept, reasons


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    docs_dir = storage.join(cfg.input_path, "documents")
    if not cfg.input_path or not storage.glob(storage.join(docs_dir, "*.parquet")):
        raise ConfigError(f"input_path {cfg.input_path!r}: no documents/*.parquet (expected a documents artifact)")
    first = storage.glob(storage.join(docs_dir, "*.parquet"))[0]
    if "id" not in storage.parquet_metadata(first).schema.to_arrow_schema().names:
        raise ConfigError(f"{first}: no id column (samples and shards are keyed by it); run `nanoforge curate` first")
    if not cfg.classifiers:
        raise ConfigError("classifiers: give at least one classifier path")
    [classifier_kind(p) for p in cfg.classifiers]  # a missing or unknown classifier fails before any work
    names = cfg.classifier_names or [classifier_name(p) for p in cfg.classifiers]
    if len(names) != len(cfg.classifiers) or len(set(names)) != len(names):
        raise ConfigError(f"classifier_names {names} must be unique, one per classifier")
    check_filters(cfg.heuristic_filters, {})  # unknown filter names fail here too
    unknown = sorted(set(cfg.heuristic_filter_labels) - {label for _, label in LABELS})
    if unknown:
        raise ConfigError(f"heuristic_filter_labels: unknown labels {unknown}; known: {[n for _, n in LABELS]}")
    inputs = [cfg.input_path, *cfg.classifiers, *([cfg.thresholds_path] if cfg.thresholds_path else [])]
    art = Artifact(cfg.output_dir, kind="documents", stage="quality", config=to_dict(cfg), inputs=inputs)
    if art.up_to_date() and not cfg.force:
        print(art.skip_message())
        return 0
    import ray

    if sum(m.num_rows for m in storage.parquet_metadata_many(storage.glob(storage.join(docs_dir, "*.parquet")))) == 0:
        with art.writing() as tmp:
            write_empty(cfg, docs_dir, names, str(tmp))
            by_label = {label: 0 for _, label in LABELS}
            art.counts = {
                "input": 0,
                "kept": 0,
                "rejected": {},
                "quarantined": 0,
                "by_label": by_label,
                "by_bucket": [0] * 20,
                "weight_share_by_bucket": [0.0] * 20,
            }
            art.extra = {"thresholds": None}
        print(f"[quality] {art.path}: 0 documents in {docs_dir}; wrote an empty artifact")
        return 0
    with art.writing() as tmp, ray_session(cfg.address):
        tmp = str(tmp)
        scored, scored_done = storage.join(tmp, "scored"), storage.join(tmp, "scored.done")
        if not storage.exists(scored_done):  # resume after a crash: scoring is the expensive part
            storage.remove(scored)
            score_documents(cfg, docs_dir, names, scored)
            storage.write_text("", scored_done)
        scores = ray.data.read_parquet(scored).select_columns(["id", *(f"quality_score_{n}" for n in names), WEIGHT])
        if cfg.thresholds_path:
            thresholds, sample_docs = load_thresholds(cfg.thresholds_path, names), None
        else:
            thresholds, sample_docs = sample_thresholds(scores, cfg, names)
        saved = {
            "percentiles": PERCENTILES.tolist(),
            "weight": "num_tokens column if present, else UTF-8 bytes",
            "sample_docs": sample_docs,
            "reused_from": cfg.thresholds_path,
            "classifiers": {
                n: {"path": str(p), "thresholds": np.asarray(thresholds[n]).tolist()}
                for n, p in zip(names, cfg.classifiers, strict=True)
            },
        }
        storage.write_text(json.dumps(saved, indent=2) + "\n", storage.join(tmp, "thresholds.json"))
        bucket_docs, bucket_weight = histogram(scores, thresholds)
        kept, reasons = write_buckets(cfg, scored, thresholds, tmp)
        storage.remove(scored)
        storage.remove(scored_done)
        if kept + sum(reasons.values()) != bucket_docs.sum():
            raise RuntimeError(f"lost documents: {bucket_docs.sum()} scored != {kept} kept + {reasons} rejected")
        by_label = {label: int(bucket_docs[bucket_labels(np.arange(20)) == label].sum()) for _, label in LABELS}
        art.counts = {
            "input": int(bucket_docs.sum()),
            "kept": kept,
            "rejected": reasons,
            "quarantined": 0,
            "by_label": by_label,
            "by_bucket": bucket_docs.tolist(),
            "weight_share_by_bucket": np.round(bucket_weight / max(bucket_weight.sum(), 1), 4).tolist(),
        }
        art.extra = {"thresholds": saved}
    print(f"[quality] {art.path}: {art.counts['input']} documents, by label {by_label}, rejected {reasons}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
