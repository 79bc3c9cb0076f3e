"""`nanoforge grpo` on the tiny base: on a reward the random model can learn in a few steps (share of digits in
the completion), the mean reward rises; the checkpoint artifact is complete."""

from __future__ import annotations

import json

import pytest

from pipelines.core.artifacts import read_manifest
from pipelines.core.config import ConfigError
from rl import grpo

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def digit_share(completions: list, **_) -> list[float]:
    """Fraction of the completion's characters that are digits: dense, so a random model gets a signal at once."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(1, len(t)) for t in texts]


def grpo_argv(base, data, out, **overrides) -> list[str]:
    args = (
        dict(
            model_name_or_path=base,
            dataset_name=data,
            output_dir=out,
            num_generations=8,
            per_device_train_batch_size=16,
            max_completion_length=12,
            temperature=1.0,
            learning_rate=3e-2,
            max_steps=14,
            logging_steps=1,
            save_steps=100,
            dtype="float32",
            bf16=False,
            activation_checkpointing=False,
            report_to="none",
            disable_tqdm=True,
            seed=0,
        )
        | overrides
    )
    argv = [x for k, v in args.items() for x in (f"--{k}", str(v))]
    return argv


@pytest.fixture
def prompts_file(tmp_path):
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"{i} + {i}\n#### {2 * i}"} for i in range(8)]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_grpo_raises_the_mean_reward(tiny_base, tmp_path, prompts_file, monkeypatch):
    monkeypatch.setitem(grpo.REWARDS, "digits", digit_share)  # registered like any reward in rl/rewards.py
    out = tmp_path / "grpo"
    argv = grpo_argv(tiny_base, prompts_file, out) + [
        "--reward_funcs",
        "digits",
        "accuracy",
        "--reward_weights",
        "1",
        "0",
    ]
    assert grpo.main(argv) == 0
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rewards = [row["rewards/digit_share/mean"] for row in logged if "rewards/digit_share/mean" in row]
    assert len(rewards) == 14
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > 2 * first and last > 0.1, rewards
    assert "rewards/accuracy/mean" in logged[0]  # the verifier reward ran on the same completions
    assert read_manifest(out)["counts"] == {"train_rows": 8, "steps": 14}


def test_unknown_reward_is_a_config_error(tiny_base, tmp_path, prompts_file):
    with pytest.raises(ConfigError, match="unknown reward_funcs"):
        grpo.main(grpo_argv(tiny_base, prompts_file, tmp_path / "x") + ["--reward_funcs", "acuracy"])
