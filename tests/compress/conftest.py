"""Fixtures for the compress tests: a calibration/distillation text set and a tiny teacher that has learned it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def text_rows(tmp_path_factory) -> Path:
    """240 rows of the built-in generated corpus (English + arithmetic) as a `text` JSONL file."""
    from sft.tokenizer import builtin_corpus

    path = tmp_path_factory.mktemp("compress_data") / "text.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in builtin_corpus(0)[:240]))
    return path


@pytest.fixture(scope="package")
def teacher(tiny_base, text_rows, tmp_path_factory) -> Path:
    """The tiny base trained for 60 steps on `text_rows` (a random model has nothing for pruning to lose)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    texts = [json.loads(line)["text"] for line in text_rows.read_text().splitlines()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    model.train()
    for step in range(60):
        batch = tokenizer(
            texts[(step * 8) % 200 :][:8], truncation=True, max_length=64, padding=True, return_tensors="pt"
        )
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model(**batch, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    out = tmp_path_factory.mktemp("teacher") / "teacher"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
