"""SFT mixtures: shares by weight, token budgets met with whole conversations, repeats in whole seeded epochs,
multi-turn conversations kept as written, overlong ones left out (never truncated), bad entries named; and a
real `nanoforge sft` run on the tiny base with a two-set mixture."""

from __future__ import annotations

import doctest
import json
import random
from collections import Counter

import pytest
from datasets import Dataset

import sft.mixture
from pipelines.core.config import ConfigError
from sft.mixture import build_mixture, check_sources


def chats(name: str, n: int, turns: int = 1) -> Dataset:
    """`n` conversations of `turns` user/assistant exchanges; every message names its set and row."""
    rows = []
    for i in range(n):
        messages = []
        for t in range(turns):
            messages += [
                {"role": "user", "content": f"{name} {i} question {t}"},
                {"role": "assistant", "content": f"{name} {i} answer {t}"},
            ]
        rows.append({"messages": messages})
    return Dataset.from_list(rows)


SETS = {"math": chats("math", 10), "chat": chats("chat", 4, turns=3)}


def load(path, config, split):
    return SETS[path]


def words(row: dict) -> int:
    """Token stand-in: words over all messages (each message is 4 words)."""
    return sum(len(m["content"].split()) for m in row["messages"])


def sources_of(dataset: Dataset) -> Counter:
    return Counter(row["messages"][0]["content"].split()[0] for row in dataset)


def test_weights_share_rows_without_repeats_by_default():
    mixed, counts = build_mixture([{"path": "math", "weight": 1}, {"path": "chat", "weight": 1}], load=load)
    assert sources_of(mixed) == {"math": 4, "chat": 4}  # the largest 1:1 mixture that repeats neither set
    assert counts["chat"]["epochs"] == 1.0 and counts["math"]["epochs"] == 0.4


def test_weights_with_a_size_repeat_small_sets_in_whole_epochs():
    entries = [{"path": "math", "weight": 1}, {"path": "chat", "weight": 1}]
    mixed, counts = build_mixture(entries, rows=20, load=load)
    chat_rows = Counter(row["messages"][0]["content"] for row in mixed if row["messages"][0]["content"][:4] == "chat")
    assert sum(chat_rows.values()) == 10 and min(chat_rows.values()) >= 2  # 2.5 epochs: every row twice, then a sample
    assert counts["chat"]["epochs"] == 2.5
    again, _ = build_mixture(entries, rows=20, load=load)
    assert again["messages"] == mixed["messages"]  # same seed, same mixture
    other, _ = build_mixture(entries, seed=1, rows=20, load=load)
    assert other["messages"] != mixed["messages"]


def test_token_budgets_take_whole_conversations():
    """Budgets in tokens: chat has 24 words per 3-turn conversation, math 8 per conversation."""
    mixed, counts = build_mixture(
        [{"path": "math", "tokens": 20}, {"path": "chat", "tokens": 50}], load=load, count_tokens=words
    )
    assert counts["math"] == {"available": 10, "dropped_overlong": 0, "rows": 3, "epochs": 0.3, "tokens": 24}
    assert counts["chat"]["rows"] == 3 and counts["chat"]["tokens"] == 72  # 2 conversations = 48 < 50: a third
    for row in mixed:  # multi-turn conversations arrive as written: every turn, in order
        name, i = row["messages"][0]["content"].split()[:2]
        assert row["messages"] == SETS[name][int(i)]["messages"]


def test_overlong_conversations_are_left_out_not_truncated(monkeypatch):
    """max_length 10 words: single-turn conversations (8) fit, 3-turn ones (24) are dropped and counted."""
    with pytest.raises(ConfigError, match="no conversations \\(after 4 over max_length\\)"):
        build_mixture([{"path": "chat", "weight": 1}], load=load, count_tokens=words, max_tokens=10)
    monkeypatch.setitem(SETS, "mixed_lengths", Dataset.from_list(list(chats("x", 3)) + list(chats("y", 2, turns=3))))
    mixed, counts = build_mixture(
        [{"path": "mixed_lengths", "weight": 1}], load=load, count_tokens=words, max_tokens=10
    )
    assert counts["mixed_lengths"]["dropped_overlong"] == 2 and sources_of(mixed) == {"x": 3}


BAD = [
    # (entries, error)
    ([{"weight": 1}], "expected a mapping with `path`"),  # no path
    ([{"path": "math"}], "exactly one of `weight` or `tokens`"),  # neither
    ([{"path": "math", "weight": 1, "tokens": 5}], "exactly one of `weight` or `tokens`"),  # both
    ([{"path": "math", "weight": 0}], "must be a positive number"),  # zero weight
    ([{"path": "math", "weigth": 1}], "unknown keys \\['weigth'\\]"),  # a typo
    ([{"path": "math", "weight": 1}, {"path": "chat", "tokens": 9}], "not both"),  # weights and budgets mixed
]


@pytest.mark.parametrize(("entries", "error"), BAD)
def test_bad_entries_are_named(entries, error):
    with pytest.raises(ConfigError, match=error):
        check_sources(entries)


def test_docstring_examples_hold():
    assert doctest.testmod(sft.mixture).failed == 0


def test_sft_trains_on_a_mixture(tiny_base, tmp_path):
    """`dataset_mixture` in the YAML: the run trains on both sets' conversations and records them as inputs."""
    import yaml

    from pipelines.core.artifacts import read_manifest
    from sft import train

    paths = []
    for name in ("math", "chat"):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in SETS[name]))
        paths.append(str(path))
    config = tmp_path / "sft.yaml"
    config.write_text(
        yaml.safe_dump(
            {"dataset_mixture": [{"path": paths[0], "weight": 1}, {"path": paths[1], "weight": 1}], "mixture_rows": 12}
        )
    )
    out = tmp_path / "out"
    argv = [
        "--config",
        str(config),
        "--model_name_or_path",
        str(tiny_base),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "6",
        "--max_length",
        "128",
        "--dtype",
        "float32",
        "--bf16",
        "false",
        "--activation_checkpointing",
        "false",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--assistant_only_loss",
        "true",
        "--logging_steps",
        "1",
    ]
    assert train.main(argv) == 0
    manifest = read_manifest(out)
    assert manifest["counts"]["train_rows"] == 12
    assert {i["path"] for i in manifest["inputs"]} >= set(paths)


def test_mixture_counts_tool_conversations_as_trl_renders_them(tiny_base, tmp_path):
    """A tool-calling source keeps `tools` as JSON text (as JSONL/Parquet hold it); the token count renders the
    tool specs the way TRL will (the instructions make these ~800 tokens), so max_length leaves them out or in."""
    from trl import ModelConfig, SFTConfig

    from pipelines.demo_posttrain import tool_rows
    from sft import train

    path = tmp_path / "tools.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in tool_rows(3, random.Random(0))))
    script = train.SFTScriptArgs(dataset_mixture=[train.MixtureSource(json.dumps({"path": str(path), "weight": 1}))])
    model = ModelConfig(model_name_or_path=str(tiny_base))

    def args(max_length):
        return SFTConfig(
            output_dir=str(tmp_path / "o"),
            max_length=max_length,
            bf16=False,
            report_to="none",
            chat_template_path=str(train.CHAT_TEMPLATE),
        )

    mixed = train.train_set(script, args(2048), model)
    assert len(mixed) == 3 and "tools" in mixed.column_names
    with pytest.raises(ConfigError, match="no conversations \\(after 3 over max_length\\)"):
        train.train_set(script, args(256), model)
