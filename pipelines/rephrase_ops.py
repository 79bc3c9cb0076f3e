"""The blocks of `nanoforge rephrase`: prompts, splitting documents into pieces, post-filters, schemas.

A document with a quality label that the config maps to tasks becomes one unit per task (`{doc id}:{task}`); a
unit whose text does not fit the generator's context is split on paragraph (line) boundaries into pieces
(`{doc id}:{task}:{k}`), each rendered into its task's prompt and generated separately; the outputs are joined
back per unit, in piece order, and the unit is kept or rejected with one reason:

    generation_error   a piece failed in the backend (the error is the detail)
    truncated          a piece stopped at max_new_tokens (the paper's outputs are whole documents)
    empty / too_short  nothing (after removing a "Here is ..." preamble) or fewer than min_words words
    refusal            the model declined or talked about itself ("I'm sorry, ...", "As an AI ...")
    copy_of_source     most of its word 8-grams are in the source (the model echoed its input)
    wrong_language     fastText LID says it is not `language` (detail: code and probability)
    contaminated:NAME  it contains an n-gram of an evaluation set (decontaminate.py, as curate and synth)
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config import ConfigError
from pipelines.prompt_formats import assistant_content, split_reasoning

PROMPTS_DIR = Path(__file__).parent / "prompts" / "rephrase"
# Nemotron-CC (arXiv 2412.02595, section 3.2): low-quality documents are rephrased in Wikipedia style (their
# knowledge kept, their noise dropped); high-quality ones feed four tasks that multiply their unique tokens.
NEMOTRON_CC_TASKS = {
    "wikipedia_rephrase": {"prompt": "wikipedia_rephrase.md", "labels": ["Low", "Medium-Low"]},
    "diverse_qa": {"prompt": "diverse_qa.md", "labels": ["High", "Medium-High"]},
    "distill": {"prompt": "distill.md", "labels": ["High", "Medium-High"]},
    "extract_knowledge": {"prompt": "extract_knowledge.md", "labels": ["High", "Medium-High"]},
    "knowledge_list": {"prompt": "knowledge_list.md", "labels": ["High", "Medium-High"]},
}
TASK_NAME = re.compile(r"^[a-z0-9_]+$")

GENERATOR = pa.struct([("model", pa.string()), ("revision", pa.string()), ("backend", pa.string())])
SAMPLING = pa.struct(
    [("temperature", pa.float64()), ("top_p", pa.float64()), ("max_new_tokens", pa.int64()), ("seed", pa.int64())]
)
# What a piece row carries through the backend (backends.py keeps the `piece` column).
PIECE = pa.struct(
    [
        ("source_id", pa.string()),
        ("task", pa.string()),
        ("index", pa.int64()),
        ("count", pa.int64()),
        ("text", pa.string()),  # the source piece, for the copy filter
        ("source", pa.string()),
        ("url", pa.string()),
        ("quality_label", pa.string()),
        ("quality_bucket", pa.int64()),
        ("prompt_hash", pa.string()),
    ]
)
# Generated pieces, written as they arrive (the resume granularity), joined and filtered at the end.
PIECE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # "{source_id}:{task}:{k}"
        ("prompt_id", pa.string()),  # "{source_id}:{task}"
        ("piece", PIECE),
        ("sampling", SAMPLING),
        ("completion", pa.string()),
        ("num_generated_tokens", pa.int64()),
        ("truncated", pa.bool_()),
        ("error", pa.string()),
    ]
)
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


# --- prompts ---------------------------------------------------------------------------------------------------


def load_tasks(tasks: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`{task: {prompt, labels}}` from the config -> `{task: {file, template, sha256, labels}}`; errors say what to fix.

    A prompt path is taken as given when it exists, else relative to pipelines/prompts/rephrase/.
    """
    out = {}
    for task, spec in tasks.items():
        if not TASK_NAME.match(task) or not isinstance(spec, dict) or set(spec) - {"prompt", "labels"}:
            raise ConfigError(f"tasks.{task}: expected {{prompt: FILE, labels: [LABEL, ...]}} under a [a-z0-9_] name")
        path = Path(str(spec.get("prompt", "")))
        path = path if path.is_file() else PROMPTS_DIR / path
        if not path.is_file():
            raise ConfigError(f"tasks.{task}: prompt file {spec.get('prompt')} not found (nor in {PROMPTS_DIR})")
        template = path.read_text()
        if "{{ document }}" not in template:
            raise ConfigError(f"tasks.{task}: {path} must contain '{{{{ document }}}}' where the text goes")
        labels = spec.get("labels") or []
        out[task] = {"file": str(path), "template": template, "sha256": hashlib.sha256(template.encode()).hexdigest()}
        out[task]["labels"] = [str(label) for label in labels]
    return out


def render(template: str, document: str) -> str:
    """The user turn: the template with the document in place of `{{ document }}` (no other templating)."""
    return template.replace("{{ document }}", document).strip()


def label_tasks(tasks: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """quality label -> the tasks applied to documents with it, in config order."""
    out: dict[str, list[str]] = {}
    for task, spec in tasks.items():
        for label in spec["labels"]:
            out.setdefault(label, []).append(task)
    return out


# --- splitting -------------------------------------------------------------------------------------------------

_BLOCKS = re.compile(r"(\n+)")
_SENTENCES = re.compile(r"(?<=[.!?])(\s+)")
_WORDS = re.compile(r"(\s+)")


def estimate_tokens(text: str) -> int:
    """Tokens without a tokenizer: UTF-8 bytes / 4 (as mix estimates them)."""
    return -(-len(text.encode()) // 4)


def split_pieces(text: str, budget: int, count: Callable[[str], int] = estimate_tokens) -> list[str]:
    """`text` cut into pieces of at most ~`budget` tokens, on paragraph (line) boundaries where possible.

    Paragraphs are packed greedily in order (by the sum of their token counts); one longer than the budget is
    cut at sentence ends, and a sentence longer than the budget at spaces (one word longer than the budget is a
    piece of its own). Separators stay with the text before them, so the pieces are the text, in order.

        split_pieces("a b\\n\\nc d", budget=2, count=lambda s: len(s.split()))  # -> ["a b", "c d"]
    """
    if count(text) <= budget:
        return [text.strip()]
    pieces, current, used = [], "", 0
    for segment in _segments(text, budget, count, 0):
        n = count(segment)
        if current and used + n > budget:
            pieces.append(current)
            current, used = "", 0
        current, used = current + segment, used + n
    pieces.append(current)
    return [p.strip() for p in pieces if p.strip()]


def _segments(text: str, budget: int, count: Callable[[str], int], level: int) -> list[str]:
    """Paragraphs (level 0), sentences (1) or words (2) of `text`, each with its trailing separator; a segment
    over the budget is split at the next level."""
    parts = (_BLOCKS, _SENTENCES, _WORDS)[level].split(text)
    out = []
    for segment in ("".join(parts[i : i + 2]) for i in range(0, len(parts), 2)):
        if level < 2 and count(segment) > budget:
            out += _segments(segment, budget, count, level + 1)
        elif segment:
            out.append(segment)
    return out


def doc_pieces(row: dict, cfg, tasks: dict, by_label: dict, done: set, budget: int, tokenizer: str | None):
    """Ray Data `flat_map` UDF: a document -> one row per (task, piece) still to generate (`done` ids skipped)."""
    count = _counter(tokenizer)
    doc_id, text, label = str(row["id"]), row["text"] or "", row.get("quality_label")
    rows = []
    for task in by_label.get(label, []):
        pieces = [text.strip()] if cfg.backend == "replay" else split_pieces(text, budget, count)
        for k, piece in enumerate(pieces):
            piece_id = f"{doc_id}:{task}:{k}"
            if piece_id in done:
                continue
            messages = [{"role": "user", "content": render(tasks[task]["template"], piece)}]
            if cfg.system_prompt:
                messages.insert(0, {"role": "system", "content": cfg.system_prompt})
            bucket = row.get("quality_bucket")
            rows.append(
                {
                    "id": piece_id,
                    "prompt_id": f"{doc_id}:{task}",
                    "messages": messages,
                    "reasoning": "off",
                    "answer": None,
                    "solution": cfg.replay.get(f"{doc_id}:{task}") if cfg.backend == "replay" else None,
                    "source": None,
                    "sampling": {
                        "temperature": float(cfg.temperature),
                        "top_p": float(cfg.top_p),
                        "max_new_tokens": int(cfg.max_new_tokens),
                        "seed": (cfg.seed * 1_000_003 + zlib.crc32(piece_id.encode())) % 2**31,
                    },
                    "piece": {
                        "source_id": doc_id,
                        "task": task,
                        "index": k,
                        "count": len(pieces),
                        "text": piece,
                        "source": row.get("source"),
                        "url": row.get("url"),
                        "quality_label": label,
                        "quality_bucket": None if bucket is None else int(bucket),
                        "prompt_hash": tasks[task]["sha256"],
                    },
                }
            )
    return rows


def _counter(tokenizer: str | None) -> Callable[[str], int]:
    if not tokenizer:
        return estimate_tokens
    from pipelines.backends import load_tokenizer

    tok = load_tokenizer(tokenizer)
    return lambda s: len(tok(s, add_special_tokens=False)["input_ids"])


# --- joining and post-filters ----------------------------------------------------------------------------------

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
        if any(r["truncated"] for r in rows):
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
    table = pa.concat_tables(pq.read_table(f) for f in sorted(Path(row["dir"]).glob("*.parquet")))
    units: dict[str, list[dict]] = {}
    for piece in table.to_pylist():
        units.setdefault(piece["prompt_id"], []).append(piece)
    rows = language_and_contamination([finish_unit(units[u], settings) for u in sorted(units)], settings, index)
    name = Path(row["dir"]).name.replace("bucket=", "part-") + ".parquet"
    kept = [r for r in rows if r["status"] == "kept"]
    rejected = [r for r in rows if r["status"] == "rejected"]
    for folder, part, schema in (("documents", kept, DOCUMENT_SCHEMA), ("rejected", rejected, REJECTED_SCHEMA)):
        if part:
            (Path(out) / folder).mkdir(parents=True, exist_ok=True)
            table = pa.Table.from_pylist([{k: r[k] for k in schema.names} for r in part], schema=schema)
            pq.write_table(table, Path(out) / folder / name)
    return {"dir": row["dir"], "kept": len(kept), "rejected": len(rejected)}


def language_and_contamination(rows: list[dict], settings: dict, index) -> list[dict]:
    """Language ID of the kept texts (reject `wrong_language`), then decontamination (reject
    `contaminated:<name>`), in that order."""
    kept = [r for r in rows if r["status"] == "kept"]
    if settings["lang_model"] and kept:
        from pipelines.filters import identify_language

        for r, (code, score) in zip(
            kept, identify_language([r["text"] for r in kept], settings["lang_model"]), strict=True
        ):
            r["lang"], r["lang_score"] = code, round(score, 4)
            if code != settings["language"]:
                r |= {"status": "rejected", "reason": "wrong_language", "detail": f"{code}:{score:.2f}"}
    kept = [r for r in rows if r["status"] == "kept"]
    if index is not None and kept:
        from pipelines.decontaminate import contamination_reasons

        for r, reason in zip(kept, contamination_reasons([r["text"] for r in kept], index), strict=True):
            if reason:
                r |= {"status": "rejected", "reason": reason}
    return rows
