"""Train a fastText quality classifier offline: high-quality reference text vs random web text (DCLM-style).

Nemotron-CC (arXiv 2412.02595) buckets web text with an ensemble of quality classifiers; one is DCLM's fastText
model, trained on a high-quality reference set against random Common Crawl pages. This stage trains the same kind
of model from labelled examples you point it at, so `nanoforge quality` runs with no downloads. A held-out split
measures how well it separates the two kinds of text (accuracy and ROC AUC go to the manifest).

    nanoforge train-quality-classifier --config pipelines/configs/train_quality_classifier_demo.yaml
    # on a cluster (fastText trains in one process; the job just runs it next to the data):
    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        nanoforge train-quality-classifier --config pipelines/configs/train_quality_classifier_dclm.yaml

Inputs are JSONL (optionally .gz), JSON lists, Parquet, plain text (one document per line) or a documents artifact
directory; `text_fields` names the fields joined into a document (e.g. `problem` + `solution`). The output artifact
holds `model.bin`, whose label `__label__hq` marks high quality; `quality` scores P(`__label__hq`).
"""

from __future__ import annotations

import glob
import gzip
import json
import logging
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.core.artifacts import Artifact
from pipelines.core.config import ConfigError, parse, to_dict
from pipelines.scoring.ops import HQ_LABEL, MODEL_FILE, fasttext_line, hq_scores

log = logging.getLogger(__name__)

WEB_LABEL = "__label__cc"  # the negative class; the positive one is scoring.ops.HQ_LABEL


@dataclass
class TrainQualityClassifierConfig:
    positive_paths: list[str] = field(
        default_factory=list, metadata={"help": "High-quality reference text (files, globs or artifact dirs)."}
    )
    negative_paths: list[str] = field(
        default_factory=list, metadata={"help": "Random web text (files, globs or artifact dirs)."}
    )
    text_fields: list[str] = field(
        default_factory=lambda: ["text"],
        metadata={"help": "Record fields joined (blank line between) into one document; absent fields are skipped."},
    )
    balance: bool = field(default=True, metadata={"help": "Downsample the larger class to the smaller one (DCLM)."})
    max_docs_per_class: int = field(default=0, metadata={"help": "Cap per class after shuffling (0 = no cap)."})
    heldout_fraction: float = field(default=0.1, metadata={"help": "Share of each class held out for evaluation."})
    epoch: int = field(default=5, metadata={"help": "fastText epochs."})
    lr: float = field(default=0.1, metadata={"help": "fastText learning rate."})
    dim: int = field(default=100, metadata={"help": "fastText embedding size."})
    word_ngrams: int = field(default=2, metadata={"help": "fastText word n-grams (DCLM uses bigrams)."})
    min_count: int = field(default=1, metadata={"help": "fastText minimum word count."})
    bucket: int = field(
        default=2_000_000, metadata={"help": "fastText n-gram hash buckets; the model holds bucket x dim floats."}
    )
    threads: int = field(default=1, metadata={"help": "fastText threads; 1 makes training reproducible."})
    seed: int = field(default=0, metadata={"help": "Seed for shuffling, the held-out split and fastText."})
    output_dir: str = field(default="runs/quality_classifier", metadata={"help": "Artifact directory to write."})
    force: bool = field(default=False, metadata={"help": "Rerun even if the artifact is up to date."})


def parse_args(argv: list[str] | None = None) -> TrainQualityClassifierConfig:
    return parse(TrainQualityClassifierConfig, argv=argv)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    scores, positive = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average rank within ties, 1-based
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _files(path: str) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        root = p / "documents" if (p / "documents").is_dir() else p
        return sorted(f for f in root.rglob("*") if f.is_file() and _kind(f))
    matches = [Path(m) for m in sorted(glob.glob(path, recursive=True))] if glob.has_magic(path) else [p]
    if not matches or not all(m.is_file() for m in matches):
        raise ConfigError(f"labelled examples not found: {path}")
    return matches


def _kind(f: Path) -> str | None:
    name = f.name.lower()
    for suffix in (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet", ".txt", ".txt.gz"):
        if name.endswith(suffix):
            return suffix.removesuffix(".gz").lstrip(".")
    return None


def read_texts(path: str, text_fields: list[str], skipped: list[str] | None = None) -> list[str]:
    """Documents in `path` (see the module docstring for formats), empty ones dropped.

    A record that cannot be read (broken JSON, invalid UTF-8, not an object, a truncated .gz) is skipped and
    described in `skipped` as 'file:line: error': raw web shards have such lines, and a classifier trained on the
    rest is what the user wants. Pass `skipped=None` to raise a ConfigError on the first one instead."""

    def bad(where: str, error: str) -> None:
        if skipped is None:
            raise ConfigError(f"{where}: {error}")
        skipped.append(f"{where}: {error}")

    def join(record, where: str) -> str | None:
        if not isinstance(record, dict):
            bad(where, f"expected a JSON object with fields {text_fields}, got {type(record).__name__}")
            return None
        return "\n\n".join(str(record[f]) for f in text_fields if record.get(f) not in (None, ""))

    texts: list[str | None] = []
    for f in _files(path):
        kind = _kind(f)
        if kind == "parquet":
            import pyarrow.parquet as pq

            names = [n for n in text_fields if n in pq.read_schema(f).names]
            if not names:
                raise ConfigError(f"{f}: none of text_fields {text_fields} is a column")
            texts += [join(r, str(f)) for r in pq.read_table(f, columns=names).to_pylist()]
            continue
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rb") as fh:
            if kind == "json":
                texts += [join(r, f"{f}[{i}]") for i, r in enumerate(json.loads(fh.read()))]
                continue
            i = 0
            try:
                for i, raw in enumerate(fh, 1):
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        bad(f"{f}:{i}", f"invalid UTF-8 ({e.reason} at byte {e.start})")
                        continue
                    if not line.strip():
                        continue
                    if kind == "txt":
                        texts.append(line.strip())
                        continue
                    try:
                        texts.append(join(json.loads(line), f"{f}:{i}"))
                    except json.JSONDecodeError as e:
                        bad(f"{f}:{i}", f"not valid JSON ({e}); expected one object per line")
            except (EOFError, OSError) as e:  # a truncated or corrupt .gz: keep what was read before it
                bad(f"{f}:{i + 1}", f"unreadable ({type(e).__name__}: {e})")
    return [t for t in texts if t and t.strip()]


def _train_supervised(train_file: Path, model_file: Path, **params) -> None:
    """fastText's `train_supervised` in a fresh Python process, the model saved to `model_file`.

    In a long-lived process that had run torch, Ray and spaCy (the test suite), fastText reported NaN at every
    learning rate on data it trains on fine in a process of its own; a child process costs well under a second."""
    code = "import json, sys, fasttext; fasttext.train_supervised(**json.loads(sys.argv[1])).save_model(sys.argv[2])"
    args = json.dumps({"input": str(train_file), **params})
    done = subprocess.run([sys.executable, "-c", code, args, str(model_file)], capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise RuntimeError(lines[-1])


def train_fasttext(train_file: Path, model_file: Path, cfg: TrainQualityClassifierConfig, retries: int = 4) -> float:
    """Train fastText's supervised model into `model_file`; returns the learning rate it trained at.

    On small or skewed data fastText can diverge ("Encountered NaN") at a learning rate that works most of the
    time; each retry halves the rate, says so, and the rate used goes to the manifest."""
    lr = cfg.lr
    params = dict(epoch=cfg.epoch, dim=cfg.dim, wordNgrams=cfg.word_ngrams, minCount=cfg.min_count, bucket=cfg.bucket)
    params |= dict(thread=cfg.threads, seed=cfg.seed, verbose=0)
    for attempt in range(retries + 1):
        try:
            _train_supervised(train_file, model_file, lr=lr, **params)
            return lr
        except RuntimeError as e:
            if "NaN" not in str(e):
                raise RuntimeError(f"fastText training failed: {e}") from None
            if attempt == retries:
                raise ConfigError(
                    f"fastText diverged (NaN) at every lr down to {lr:g}; lower dim or epoch, or give more data"
                ) from None
            log.warning(f"[train-quality-classifier] fastText diverged (NaN) at lr={lr:g}; retrying at lr={lr / 2:g}")
            lr /= 2
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if not cfg.positive_paths or not cfg.negative_paths:
        raise ConfigError("set both positive_paths (high-quality text) and negative_paths (web text)")
    if not 0 < cfg.heldout_fraction < 1:
        raise ConfigError(f"heldout_fraction must be in (0, 1), got {cfg.heldout_fraction}")
    for path in [*cfg.positive_paths, *cfg.negative_paths]:
        _files(path)  # a missing input fails here, naming it
    art = Artifact(
        cfg.output_dir,
        kind="quality-classifier",
        stage="train-quality-classifier",
        config=to_dict(cfg),
        inputs=[*cfg.positive_paths, *cfg.negative_paths],
    )
    if art.up_to_date() and not cfg.force:
        print(art.skip_message())
        return 0
    import fasttext

    rng = random.Random(cfg.seed)
    classes = {}
    skipped: list[str] = []
    for label, paths in ((HQ_LABEL, cfg.positive_paths), (WEB_LABEL, cfg.negative_paths)):
        docs = [t for p in paths for t in read_texts(p, cfg.text_fields, skipped)]
        if not docs:
            raise ConfigError(f"no non-empty documents in {paths} (text_fields={cfg.text_fields})")
        rng.shuffle(docs)
        classes[label] = docs
    read = {label: len(docs) for label, docs in classes.items()}
    cap = min(read.values()) if cfg.balance else max(read.values())
    cap = min(cap, cfg.max_docs_per_class or cap)
    train, heldout = [], []
    for label, docs in classes.items():
        docs = docs[:cap]
        n_held = max(1, round(len(docs) * cfg.heldout_fraction))
        heldout += [(label, d) for d in docs[:n_held]]
        train += [(label, d) for d in docs[n_held:]]
    rng.shuffle(train)

    with art.writing() as tmp:
        train_file = tmp / "train.txt"
        train_file.write_text("".join(f"{label} {fasttext_line(text)}\n" for label, text in train))
        lr = train_fasttext(train_file, tmp / MODEL_FILE, cfg)
        train_file.unlink()
        model = fasttext.load_model(str(tmp / MODEL_FILE))
        scores = hq_scores(model, [text for _, text in heldout])
        is_hq = np.array([label == HQ_LABEL for label, _ in heldout])
        metrics = {
            "heldout_accuracy": round(float(((scores >= 0.5) == is_hq).mean()), 4),
            "heldout_roc_auc": round(roc_auc(scores, is_hq), 4),
        }
        art.counts = {
            "read": read,
            "used_per_class": cap,
            "train": len(train),
            "heldout": len(heldout),
            "not_used": sum(read.values()) - len(train) - len(heldout),
            "unreadable": len(skipped),
        }
        art.extra = {"metrics": metrics, "labels": {"high_quality": HQ_LABEL, "web": WEB_LABEL}, "lr_used": lr}
        art.extra["unreadable_records"] = skipped[:100]  # the first ones, 'file:line: error'
    for where in skipped[:5]:
        print(f"[train-quality-classifier] skipped unreadable record {where}", file=sys.stderr)
    if len(skipped) > 5:
        print(
            f"[train-quality-classifier] ... {len(skipped)} unreadable records in all (manifest: unreadable_records)",
            file=sys.stderr,
        )
    print(f"[train-quality-classifier] {art.path / MODEL_FILE}: {json.dumps(art.counts)} held-out {metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
