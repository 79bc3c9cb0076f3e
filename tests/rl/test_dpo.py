"""`nanoforge dpo` on the tiny base: the chosen-vs-rejected log-prob margin grows on the training pairs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from pipelines.core.artifacts import read_manifest
from rl import dpo

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def pairs(n: int, seed: int = 0) -> list[dict]:
    """Addition questions: the chosen answer is right, the rejected one off by 1-9; half with reasoning."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b, wrong = rng.randint(1, 30), rng.randint(1, 30), rng.randint(1, 9)
        if i % 2:
            prompt = [{"role": "user", "content": f"What is {a} plus {b}? /no_think"}]
            chosen, rejected = f"The answer is {a + b}.", f"The answer is {a + b + wrong}."
        else:
            prompt = [{"role": "user", "content": f"What is {a} plus {b}?"}]
            chosen = f"<think>\n{a} plus {b} is {a + b}.\n</think>The answer is {a + b}."
            rejected = f"<think>\n{a} plus {b} is {a + b + wrong}.\n</think>The answer is {a + b + wrong}."
        rows.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        )
    return rows


def completion_logp(model, tokenizer, prompt: list[dict], completion: list[dict]) -> float:
    """Sum of log p(completion tokens | prompt) under the chat template."""
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
    full_ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
    start = len(prompt_ids["input_ids"])
    ids = torch.tensor([full_ids])
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
    return logp[start - 1 :].gather(1, ids[0, start:, None]).sum().item()


def mean_margin(model_dir: Path, rows: list[dict]) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    margins = [
        completion_logp(model, tokenizer, r["prompt"], r["chosen"])
        - completion_logp(model, tokenizer, r["prompt"], r["rejected"])
        for r in rows
    ]
    return sum(margins) / len(margins)


def test_dpo_widens_the_chosen_rejected_margin(tiny_base, tmp_path):
    rows = pairs(24)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "dpo"
    argv = [
        "--model_name_or_path",
        str(tiny_base),
        "--dataset_name",
        str(data),
        "--output_dir",
        str(out),
        "--loss_type",
        "sigmoid_norm",
        "--beta",
        "0.1",
        "--learning_rate",
        "3e-3",
        "--max_steps",
        "15",
        "--per_device_train_batch_size",
        "8",
        "--logging_steps",
        "5",
        "--max_length",
        "256",
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
        "--save_steps",
        "100",
    ]
    assert dpo.main(argv) == 0
    before, after = mean_margin(tiny_base, rows), mean_margin(out, rows)
    assert after > before + 1.0, (before, after)  # nats per pair, summed over the answer tokens
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    margins = [row["rewards/margins"] for row in logged if "rewards/margins" in row]
    assert margins[-1] > margins[0]
    assert read_manifest(out)["counts"] == {"train_rows": 24, "steps": 15}


@pytest.mark.parametrize("loss_type", ["sigmoid", "sigmoid_norm", "apo_zero"])
def test_loss_types_are_trls(loss_type, tmp_path):
    _, training_args, _ = dpo.parse_args(["--output_dir", str(tmp_path), "--loss_type", loss_type, "--bf16", "false"])
    assert training_args.loss_type == [loss_type]
