"""Post-filters and joining for `nanoforge rephrase`: generated pieces -> one kept or rejected row per unit.

The pieces of a (document, task) are joined in order and the unit is kept or rejected with one reason:

    generation_error   a piece failed in the backend (the error is the detail)
    truncated          a piece stopped at max_new_tokens (the paper's outputs are whole documents)
    empty / too_short  nothing (after removing a "Here is ...:" preamble) or fewer than min_words words
    refusal            the model declined or talked about itself ("I'm sorry, ...", "As an AI ...")
    copy_of_source     most of its word 8-grams are in the source (the model echoed its input)
    wrong_language     fastText LID says it is not `language` (detail: code and probability)
    contaminated:NAME  it contains an n-gram of an evaluation set (decontaminate.py, as curate and synth)
"""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import storage
from pipelines.reasoning.prompt_formats import assistant_content, split_reasoning
from pipelines.rephrasing.ops import GENERATOR, SAMPLING

# The synthetic documents contract (DESIGN.md): documents columns + lineage.
DOCUMENT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # "{source_id}:{task}"
        ("text", pa.string()),
        ("source", pa.string()),  # "synthetic/{task}"
        ("url", pa.string()),  # the source document's
        ("metadata", pa.string()),  # JSON: the source document's source, pieces, preamble removed
        ("lang", pa.string()),
        ("lang_score", pa.float64()),
        ("quality_bucket", pa.int64()),  # the source document's (mix selects synthetic data by it too)
        ("quality_label", pa.string()),
        ("num_tokens", pa.int64()),  # generated tokens, all pieces
        ("source_id", pa.string()),
        ("task", pa.string()),
        ("prompt_hash", pa.string()),  # sha256 of the prompt file
        ("generator", GENERATOR),
        ("sampling_params", SAMPLING),  # the first piece's (seeds differ per piece)
    ]
)
REJECTED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source_id", pa.string()),
        ("task", pa.string()),
        ("source", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("text", pa.string()),  # the generated text, for inspection (null when generation failed)
    ]
)


_PREAMBLE = re.compile(r"^\s*(here is|here's|here are|sure|certainly)[^\n]{0,160}:[ \t]*(\n|$)", re.I)
_REFUSAL = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry, (but )?i|i cannot|i can'?t|i am unable|i'?m unable|i apologi[sz]e|"
    r"unfortunately, i|as an ai)|as an ai (language )?model",
    re.I,
)


def clean(completion: str) -> tuple[str, bool]:
    """Generated text without a think block or a one-line "Here is ..." preamble; (text, preamble removed)."""
    text = split_reasoning(assistant_content(completion, "off"))[1]
    stripped = _PREAMBLE.sub("", text, count=1)
    return stripped.strip(), stripped != text


def copy_ratio(output: str, source: str, n: int = 8) -> float:
    """Share of the output's word n-grams (lowercased) that occur in the source; 0 for outputs under n words."""
    out_words, src_words = output.lower().split(), source.lower().split()
    grams = {tuple(out_words[i : i + n]) for i in range(len(out_words) - n + 1)}
    if not grams:
        return 0.0
    src = {tuple(src_words[i : i + n]) for i in range(len(src_words) - n + 1)}
    return len(grams & src) / len(grams)


def finish_unit(rows: list[dict], settings: dict) -> dict:
    """The generated pieces of one (document, task) -> one outcome row: joined text, lineage,
    `status` kept | rejected with `reason` and `detail`. Language ID and decontamination come after, in batches."""
    rows = sorted(rows, key=lambda r: r["piece"]["index"])
    piece, first = rows[0]["piece"], rows[0]
    unit = {"id": first["prompt_id"], "source_id": piece["source_id"], "task": piece["task"]}
    unit["source"] = f"synthetic/{piece['task']}"
    reason, detail, text, preamble = None, None, None, 0
    if len(rows) != piece["count"] or len({r["id"] for r in rows}) != len(rows):
        reason, detail = "generation_error", f"{len(rows)} of {piece['count']} pieces"
    elif errors := [r["error"] for r in rows if r["error"] or r["completion"] is None]:
        reason, detail = "generation_error", str(errors[0] or "no completion")[:500]
    else:
        parts = [clean(r["completion"]) for r in rows]
        text, preamble = "\n\n".join(p for p, _ in parts if p), sum(removed for _, removed in parts)
        words = len(text.split())
        source = "\n".join(r["piece"]["text"] for r in rows)
        if settings["reject_truncated"] and any(r["truncated"] for r in rows):
            reason, detail = "truncated", f"at max_new_tokens={first['sampling']['max_new_tokens']}"
        elif not text:
            reason = "empty"
        elif words < settings["min_words"]:
            reason, detail = "too_short", f"{words} words < {settings['min_words']}"
        elif _REFUSAL.search(text[:300]):
            reason, detail = "refusal", text[:80]
        elif (ratio := copy_ratio(text, source)) >= settings["max_copy_ratio"]:
            reason, detail = "copy_of_source", f"{ratio:.2f} of its 8-grams are in the source"
    unit |= {"status": "rejected" if reason else "kept", "stage": "rephrase", "reason": reason, "detail": detail}
    unit |= {"text": text, "url": piece["url"], "quality_label": piece["quality_label"]}
    unit |= {"quality_bucket": piece["quality_bucket"], "prompt_hash": piece["prompt_hash"]}
    unit |= {"generator": settings["generator"], "lang": None, "lang_score": None}
    unit["sampling_params"] = None if settings["generator"]["backend"] == "replay" else first["sampling"]
    tokens = [r["num_generated_tokens"] for r in rows]
    unit["num_tokens"] = None if None in tokens else sum(tokens)
    meta = {"source": piece["source"], "pieces": piece["count"], "preambles_removed": preamble}
    unit["metadata"] = json.dumps(meta)
    return unit


def finish_bucket(row: dict, settings: dict, index, out: str) -> dict:
    """Ray Data `map` UDF, one task per bucket of units (`.work/pieces/bucket=K/`, every piece of a unit in the
    same bucket): join and filter its units, write `documents/part-K.parquet` and `rejected/part-K.parquet`
    (fixed names: a rerun rewrites them, never adds). Returns the bucket's row counts."""
    table = pa.concat_tables(storage.read_table(f) for f in storage.glob(storage.join(row["dir"], "*.parquet")))
    units: dict[str, list[dict]] = {}
    for piece in table.to_pylist():
        units.setdefault(piece["prompt_id"], []).append(piece)
    rows = language_and_contamination([finish_unit(units[u], settings) for u in sorted(units)], settings, index)
    name = storage.basename(row["dir"]).replace("bucket=", "part-") + ".parquet"
    kept = [r for r in rows if r["status"] == "kept"]
    rejected = [r for r in rows if r["status"] == "rejected"]
    for folder, part, schema in (("documents", kept, DOCUMENT_SCHEMA), ("rejected", rejected, REJECTED_SCHEMA)):
        if part:
            storage.makedirs(storage.join(out, folder))
            table = pa.Table.from_pylist([{k: r[k] for k in schema.names} for r in part], schema=schema)
            fs, path = storage.filesystem(storage.join(out, folder, name))  # a local folder or a URL prefix
            pq.write_table(table, path, filesystem=fs)
    return {"dir": row["dir"], "kept": len(kept), "rejected": len(rejected)}


def language_and_contamination(rows: list[dict], settings: dict, index) -> list[dict]:
    """Language ID of the kept texts (reject `wrong_language`), then decontamination (reject
    `contaminated:<name>`), in that order."""
    kept = [r for r in rows if r["status"] == "kept"]
    if settings["lang_model"] and kept:
        from pipelines.curation.filters import identify_language

        for r, (code, score) in zip(
            kept, identify_language([r["text"] for r in kept], settings["lang_model"]), strict=True
        ):
            r["lang"], r["lang_score"] = code, round(score, 4)
            if code != settings["language"]:
                r |= {"status": "rejected", "reason": "wrong_language", "detail": f"{code}:{score:.2f}"}
    kept = [r for r in rows if r["status"] == "kept"]
    if index is not None and kept:
        from pipelines.dedup.decontaminate import contamination_reasons

        for r, reason in zip(kept, contamination_reasons([r["text"] for r in kept], index), strict=True):
            if reason:
                r |= {"status": "rejected", "reason": reason}
    return rows
