"""Benchmark decontamination: find texts that contain an n-gram of an evaluation set.

    index = build_index(["gsm8k=../shared/data/gsm8k/test.jsonl:question",
                         "math500=../shared/data/math500/test.jsonl:problem"], n=13)
    find_contamination(["...a web page quoting a GSM8K question...", "a clean page"], index)
    # -> ["gsm8k", None]

Used by `curate` on documents (drop reason `contaminated:<name>`) and by `synth` on prompts and traces: the
function takes plain strings. Text is normalized as datatrove does it (`simplify_text`: lowercase, numbers -> 0,
no punctuation, no accents; spaCy English words), so an n-gram hash here equals datatrove's `NGramsDecontFilter`
hash of the same n-gram (`export_datatrove` writes an index that filter can load).

Evaluation items shorter than `n` words (MATH has "Evaluate $\\log_264$." -> `evaluate log 0`) have no n-gram.
Such an item is matched whole when it has at least `min_words` words (a text contains its exact word sequence);
shorter ones are too generic to match without dropping clean text, so they are counted as `too_short` in
`index.stats` and never matched.

Spec format: `NAME=PATH:FIELD[,FIELD...]`. PATH is a local .jsonl/.json/.parquet file (optionally .gz), or a
Hugging Face Hub dataset id `ORG/NAME[@CONFIG][#SPLIT]` (split defaults to `test`) loaded with `datasets`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xxhash

from pipelines.core import storage
from pipelines.core.config import ConfigError
from pipelines.dedup.minhash import word_ngram_hashes, word_string


@dataclass
class DecontIndex:
    """n-gram hashes of the evaluation sets (sorted, for `np.searchsorted`) and the set each came from."""

    n: int
    min_words: int
    names: list[str]
    hashes: np.ndarray  # uint64 [H] sorted: xxh64 of each " "-joined n-gram of every item
    owner: np.ndarray  # int32 [H]: index into `names`
    short_prefix: np.ndarray  # uint64 [S] sorted: hash of the first `min_words` words of each short item
    short_hash: np.ndarray  # uint64 [S]: hash of the whole short item
    short_len: np.ndarray  # int64 [S]: its number of words
    short_owner: np.ndarray  # int32 [S]
    stats: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> items, ngrams, short, too_short


def parse_spec(spec: str) -> tuple[str, str, list[str]]:
    """`NAME=PATH:FIELD[,FIELD]` -> (name, path, fields)."""
    name, eq, rest = spec.partition("=")
    path, colon, fields = rest.rpartition(":")
    if not eq or not colon or not name.strip() or not path or not fields:
        raise ConfigError(
            f"decontaminate_against entry '{spec}': expected NAME=PATH:FIELD, "
            "e.g. gsm8k=../shared/data/gsm8k/test.jsonl:question"
        )
    return name.strip(), path.strip(), [f.strip() for f in fields.split(",")]


def _rows(path: str):
    """Rows of a JSONL/JSON/Parquet file (local or a URL), or of a Hub dataset `ORG/NAME[@CONFIG][#SPLIT]`."""
    import fsspec

    p = Path(storage.local_path(path))
    if storage.exists(path):
        suffixes = [s for s in Path(storage.basename(path)).suffixes if s != ".gz"]
        if suffixes and suffixes[-1] == ".parquet":
            yield from storage.read_table(path).to_pylist()
        elif suffixes and suffixes[-1] == ".json":
            with fsspec.open(path, "rt", compression="infer") as f:
                data = json.load(f)
            yield from data if isinstance(data, list) else [data]
        else:
            with fsspec.open(path, "rt", compression="infer") as f:
                for line_no, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            yield json.loads(line)
                        except ValueError as e:
                            raise ConfigError(f"{storage.redact(path)}:{line_no}: not valid JSON ({e})") from None
        return
    if p.suffix in (".jsonl", ".json", ".parquet", ".gz") or path.startswith((".", "/")):
        raise ConfigError(f"evaluation set not found: {path} (a local file, or a Hub id ORG/NAME[@CONFIG][#SPLIT])")
    import datasets

    repo, _, split = path.partition("#")
    repo, _, config = repo.partition("@")
    yield from datasets.load_dataset(repo, config or None, split=split or "test")


def load_texts(path: str, fields: list[str]) -> list[str]:
    """The strings under `fields` of every row (a list-valued field contributes each element)."""
    texts = []
    for i, row in enumerate(_rows(path)):
        for name in fields:
            if name not in row:
                raise ConfigError(f"{path}: row {i} has no field '{name}' (fields: {', '.join(row)})")
            value = row[name]
            values = value if isinstance(value, list) else [value]
            texts.extend(str(v) for v in values if v is not None)
    return texts


def build_index(specs: list[str], n: int = 13, min_words: int = 8) -> DecontIndex:
    """Index the n-grams of every `NAME=PATH:FIELD` evaluation set; items of `min_words`..`n-1` words whole."""
    names, grams, short, stats = [], {}, [], {}
    for spec in specs:
        name, path, fields = parse_spec(spec)
        if name in names:
            raise ConfigError(f"decontaminate_against: the name '{name}' is used twice")
        k = len(names)
        names.append(name)
        counts = {"items": 0, "ngrams": 0, "short": 0, "unmatchable": 0}
        for text in load_texts(path, fields):
            words = word_string(text).split()
            keys = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1) if _informative(words[i : i + n])]
            for key in keys:
                grams.setdefault(_hash(key), k)  # an n-gram shared by two sets belongs to the first listed
            whole = not keys and min_words <= len(words) < n and _informative(words)
            if whole:
                short.append((_hash(" ".join(words[:min_words])), _hash(" ".join(words)), len(words), k))
            counts["items"] += 1
            counts["ngrams"] += len(keys)
            counts["short"] += whole
            counts["unmatchable"] += not keys and not whole
        stats[name] = counts
    hashes = np.array(sorted(grams), dtype=np.uint64)
    short.sort()
    cols = list(zip(*short, strict=True)) or [[], [], [], []]
    return DecontIndex(
        n=n,
        min_words=min_words,
        names=names,
        hashes=hashes,
        owner=np.array([grams[int(h)] for h in hashes], dtype=np.int32),
        short_prefix=np.array(cols[0], np.uint64),
        short_hash=np.array(cols[1], np.uint64),
        short_len=np.array(cols[2], np.int64),
        short_owner=np.array(cols[3], np.int32),
        stats=stats,
    )


def _informative(words: list[str]) -> bool:
    """At least a third of the words have a letter: after numbers -> 0, "0 0 0 ..." n-grams match any table."""
    return 3 * sum(any(c.isalpha() for c in w) for w in words) >= len(words)


def _hash(s: str) -> int:
    return xxhash.xxh64_intdigest(s)  # = datatrove's n-gram hash, = xxh64_spans on the UTF-8 bytes


def _first_hits(hashes: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Indices into `hashes` of values present in the sorted `table`."""
    if not len(table) or not len(hashes):
        return np.zeros(0, np.int64)
    pos = np.minimum(np.searchsorted(table, hashes), len(table) - 1)
    return np.flatnonzero(table[pos] == hashes)


def find_contamination(texts: list[str], index: DecontIndex) -> list[str | None]:
    """For each text, the name of the first evaluation set (in text order) it shares an n-gram with, or None."""
    words = [word_string(t) for t in texts]
    found: list[tuple[int, str] | None] = [None] * len(texts)  # (word position, name)

    def note(doc: int, position: int, owner: int) -> None:
        if found[doc] is None or position < found[doc][0]:
            found[doc] = (position, index.names[owner])

    h, offsets = word_ngram_hashes(words, index.n)
    docs = np.repeat(np.arange(len(texts)), np.diff(offsets))
    hits = _first_hits(h, index.hashes)
    owners = index.owner[np.searchsorted(index.hashes, h[hits])]
    for i, owner in zip(hits, owners, strict=True):
        note(docs[i], int(i - offsets[docs[i]]), int(owner))
    if len(index.short_prefix):  # whole short items: find their first words, then compare the rest
        h, offsets = word_ngram_hashes(words, index.min_words)
        docs = np.repeat(np.arange(len(texts)), np.diff(offsets))
        for i in _first_hits(h, index.short_prefix):
            doc, position = int(docs[i]), int(i - offsets[docs[i]])
            tokens = words[doc].split(" ")
            lo, hi = (
                np.searchsorted(index.short_prefix, h[i], "left"),
                np.searchsorted(index.short_prefix, h[i], "right"),
            )
            for j in range(lo, hi):
                span = " ".join(tokens[position : position + int(index.short_len[j])])
                if _hash(span) == int(index.short_hash[j]):
                    note(doc, position, int(index.short_owner[j]))
    return [f[1] if f else None for f in found]


def contamination_reasons(texts: list[str], index: DecontIndex) -> list[str | None]:
    """`find_contamination` as drop reasons: `contaminated:<name>` or None."""
    return [f"contaminated:{name}" if name else None for name in find_contamination(texts, index)]


def export_datatrove(index: DecontIndex, folder: str | Path) -> None:
    """Write `<name>.index.hashes` files that datatrove's `NGramsDecontFilter` loads (its n-grams only)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(index.names):
        index.hashes[index.owner == k].astype("<u8").tofile(folder / f"{name}.index.hashes")


def _curate_rejections(batch, index: DecontIndex):
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipelines.curation.chunks import REJECTION_COLUMNS

    batch = batch.filter(pc.equal(batch["status"], "kept"))
    reasons = contamination_reasons(batch["text"].to_pylist(), index)
    hit = pa.array([r is not None for r in reasons])
    n = sum(r is not None for r in reasons)
    return pa.table(
        {
            "chunk": batch["chunk"].filter(hit),
            "row": batch["row"].filter(hit).cast(pa.int32()),
            "stage": pa.array(["decontaminate"] * n, pa.string()),
            "reason": pa.array([r for r in reasons if r], pa.string()),
            "duplicate_of": pa.nulls(n, pa.string()),
        },
        schema=REJECTION_COLUMNS,
    )


def curate_step(chunk_files: list[str], cfg):
    """curate's global step: kept candidates that contain an n-gram of `cfg.decontaminate_against`, as
    REJECTION_COLUMNS rows with reason `contaminated:<name>` (so the manifest counts them per benchmark)."""
    import ray

    from pipelines.curation.chunks import REJECTION_COLUMNS

    if not chunk_files:
        return ray.data.from_arrow(REJECTION_COLUMNS.empty_table())
    index = build_index(list(cfg.decontaminate_against))
    docs = ray.data.read_parquet(list(chunk_files)).select_columns(["chunk", "row", "text", "status"])
    return docs.map_batches(_curate_rejections, batch_format="pyarrow", fn_kwargs={"index": index})
