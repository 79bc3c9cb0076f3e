"""SFT mixtures: several conversational sets in one run, each with a weight or a token budget, whole conversations.

In the SFT YAML (`dataset_mixture` replaces `dataset_name`):

    dataset_mixture:
      - {path: runs/nano2/select_math/sft, weight: 3}            # a share of the rows: 3 / (3 + 1)
      - {path: runs/nano2/chat.jsonl, weight: 1, split: train}
    mixture_rows: 20000                                          # optional: the mixture's size in rows

or, with token budgets (tokens of the conversation rendered by the chat template):

      - {path: runs/nano2/select_math/sft, tokens: 50_000_000}
      - {path: runs/nano2/tool_calls.jsonl, tokens: 5_000_000}

Weights split `mixture_rows` between the sources; without `mixture_rows` the mixture is the largest that repeats
no source (TRL's `fraction` rule). A source asked for more rows or tokens than it has repeats in whole shuffled
epochs plus a seeded sample, so the mixture is the same for the same seed. A budget is met by whole conversations
(the last one may go past it). Conversations are rows and are never cut: a multi-turn conversation is trained with
every assistant turn, and one longer than the trainer's `max_length` is left out (and counted) rather than truncated
mid-turn. Columns kept: `messages`, and `tools` where a source has it (tool-calling sets).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable

from pipelines.core.config import ConfigError

logger = logging.getLogger(__name__)
SOURCE_KEYS = {"path", "config", "split", "weight", "tokens"}


class MixtureSource(dict):
    """One mixture source: a mapping in the YAML, or its JSON text as a flag (recipes pass args as flags)."""

    def __init__(self, value: str | dict | None = None):
        super().__init__(json.loads(value) if isinstance(value, str) else value or {})


def check_sources(entries: list[dict]) -> list[dict]:
    """The mixture's sources with defaults, or a ConfigError naming the bad entry and what it needs."""
    sources = []
    for i, entry in enumerate(entries):
        where = f"dataset_mixture[{i}]"
        if not isinstance(entry, dict) or "path" not in entry:
            raise ConfigError(f"{where}: expected a mapping with `path` and `weight` or `tokens`, got {entry!r}")
        unknown = set(entry) - SOURCE_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(SOURCE_KEYS)}")
        if ("weight" in entry) == ("tokens" in entry):
            raise ConfigError(f"{where} ({entry['path']}): give exactly one of `weight` or `tokens`")
        amount = entry.get("weight", entry.get("tokens"))
        if not isinstance(amount, int | float) or amount <= 0:
            raise ConfigError(f"{where} ({entry['path']}): weight/tokens must be a positive number, got {amount!r}")
        sources.append({"config": None, "split": "train", **entry})
    kinds = {"weight" in s for s in sources}
    if len(kinds) > 1:
        raise ConfigError("dataset_mixture: use weights for every source or token budgets for every source, not both")
    return sources


def take(n_rows: int, n: int, rng: random.Random) -> list[int]:
    """`n` row indexes of a set of `n_rows`: whole shuffled epochs, then a sample without repeats.

    >>> sorted(take(3, 7, random.Random(0)))  # two epochs, then one row more
    [0, 0, 1, 1, 1, 2, 2]
    """
    epochs, rest = divmod(n, n_rows)
    out = []
    for _ in range(epochs):
        out += rng.sample(range(n_rows), n_rows)
    return out + rng.sample(range(n_rows), rest)


def take_tokens(lengths: list[int], budget: int, rng: random.Random) -> list[int]:
    """Row indexes in shuffled epochs until their token lengths reach `budget` (the last row kept whole).

    >>> len(take_tokens([10, 10, 10], 25, random.Random(0)))  # 20 < 25: a third conversation, whole
    3
    """
    out, total = [], 0
    while total < budget:
        for i in rng.sample(range(len(lengths)), len(lengths)):
            if total >= budget:
                break
            out.append(i)
            total += lengths[i]
    return out


def build_mixture(
    entries: list[dict],
    seed: int = 0,
    rows: int | None = None,
    count_tokens: Callable[[dict], int] | None = None,
    max_tokens: int | None = None,
    load: Callable | None = None,
):
    """The mixed, shuffled `datasets.Dataset` and per-source counts (`rows`, `epochs`, `tokens`, `dropped_overlong`).

    `count_tokens(row)` measures a conversation (needed for token budgets and for leaving out conversations over
    `max_tokens`); `load(path, config, split)` reads a source (default: `pipelines.core.datasets.load_split`).
    """
    import datasets

    from pipelines.core.datasets import load_split

    sources = check_sources(entries)
    if not sources:
        raise ConfigError("dataset_mixture is empty")
    by_tokens = "tokens" in sources[0]
    if by_tokens and count_tokens is None:
        raise ConfigError("dataset_mixture with token budgets needs a tokenizer to count tokens")
    rng = random.Random(seed)
    loaded, counts = [], {}
    for i, s in enumerate(sources):
        ds = (load or load_split)(s["path"], s["config"], s["split"])
        if "messages" not in ds.column_names:
            raise ConfigError(f"dataset_mixture[{i}] ({s['path']}): no `messages` column; got {ds.column_names}")
        ds = ds.select_columns([c for c in ("messages", "tools") if c in ds.column_names])
        lengths = [count_tokens(row) for row in ds] if count_tokens else None
        dropped = 0
        if lengths is not None and max_tokens:
            fits = [j for j, n in enumerate(lengths) if n <= max_tokens]
            dropped = len(ds) - len(fits)
            ds, lengths = ds.select(fits), [lengths[j] for j in fits]
        if len(ds) == 0:
            raise ConfigError(
                f"dataset_mixture[{i}] ({s['path']}): no conversations (after {dropped} over max_length)"
            )
        loaded.append((s, ds, lengths))
        counts[s["path"]] = {"available": len(ds), "dropped_overlong": dropped}
    if by_tokens:
        picks = [take_tokens(lengths, s["tokens"], rng) for s, _, lengths in loaded]
    else:
        total_weight = sum(s["weight"] for s, _, _ in loaded)
        shares = [s["weight"] / total_weight for s, _, _ in loaded]
        size = rows or min(len(ds) / share for (_, ds, _), share in zip(loaded, shares, strict=True))
        picks = [take(len(ds), round(share * size), rng) for (_, ds, _), share in zip(loaded, shares, strict=True)]
    parts = []
    for (s, ds, lengths), idx in zip(loaded, picks, strict=True):
        counts[s["path"]] |= {"rows": len(idx), "epochs": round(len(idx) / len(ds), 3)}
        if lengths is not None:
            counts[s["path"]]["tokens"] = sum(lengths[j] for j in idx)
        parts.append(ds.select(idx))
    try:
        mixed = datasets.concatenate_datasets(parts)
    except ValueError:  # different message structs (e.g. tool calls in one set only): rebuild from Python rows
        mixed = datasets.Dataset.from_list([row for part in parts for row in part])
    logger.info("sft mixture: %s", counts)
    return mixed.shuffle(seed=seed), counts
