"""GRPO rewards as tables (one comment per case), the verifier on real labelled GSM8K solutions, and the GRPO
prompt preparation (reasoning on/off per prompt)."""

from __future__ import annotations

import ast
import doctest
import json

import pytest
from datapaths import shared_data

import rl.rewards
from rl.grpo import reasoning_of, rl_prompts
from rl.rewards import REWARDS, accuracy, overlong_penalty, think_format

ACCURACY = [
    # (completion as TRL passes it, gold answer, reasoning mode, expected reward)
    ("2 + 2 = 4.</think>The answer is \\boxed{4}.", "4", "on", 1.0),  # boxed answer after the think block
    ("2 + 2 = 4.</think>#### 4", "4", "on", 1.0),  # GSM8K-style final line
    ("2 + 2 = 4.</think>The answer is 5.", "4", "on", 0.0),  # a wrong final answer; the 4 in the reasoning is ignored
    ("Let me think: it is 4", "4", "on", 0.0),  # thinking never closed: no answer was given, although 4 appears
    ("The answer is 1,200.", "1200", "off", 1.0),  # thousands separator
    ("The answer is \\boxed{\\frac{1}{2}}", "0.5", "off", 1.0),  # math-verify compares values, not strings
    ("The answer is 7.", None, "off", None),  # no gold answer: the reward does not apply
    ("", "4", "off", 0.0),  # empty completion
    ([{"role": "assistant", "content": "#### 4"}], "4", "off", 1.0),  # conversational completion (TRL's list form)
]


@pytest.mark.parametrize(("completion", "gold", "mode", "expected"), ACCURACY)
def test_accuracy_table(completion, gold, mode, expected):
    assert accuracy([completion], answer=[gold], reasoning=[mode]) == [expected]


THINK_FORMAT = [
    # (completion, reasoning mode, expected reward); with reasoning on the prompt already opened `<think>\n`
    ("plan the sum</think>The answer is 4.", "on", 1.0),  # closed once, then an answer
    ("plan the sum</think>", "on", 0.0),  # no answer after the reasoning
    ("plan the sum without end", "on", 0.0),  # reasoning never closed
    ("<think>plan</think>4", "on", 0.0),  # reopened the think block the prompt had opened
    ("a</think>b</think>4", "on", 0.0),  # closed twice
    ("The answer is 4.", "off", 1.0),  # reasoning off: a plain answer
    ("x</think>4", "off", 0.0),  # think tags in reasoning-off mode
    ("   ", "off", 0.0),  # empty answer
]


@pytest.mark.parametrize(("completion", "mode", "expected"), THINK_FORMAT)
def test_think_format_table(completion, mode, expected):
    assert think_format([completion], reasoning=[mode]) == [expected]


OVERLONG = [
    # (completion length in tokens, expected penalty) for max_completion_length=100, overlong_buffer=20
    (50, 0.0),  # well inside the budget
    (80, 0.0),  # exactly where the buffer starts
    (90, -0.5),  # halfway through the buffer
    (100, -1.0),  # at the limit, where TRL cuts the completion off
    (130, -1.0),  # never below -1
]


@pytest.mark.parametrize(("length", "expected"), OVERLONG)
def test_overlong_table(length, expected):
    """TRL's get_soft_overlong_punishment, which the stage uses, gives DAPO's eq. 13 at every point of the table."""
    penalty = overlong_penalty(max_completion_length=100, overlong_buffer=20)
    assert penalty([[1] * length], completions=["x"], answer=["4"]) == [expected]
    limit = 100 - 20  # DAPO, written out: 0 up to the buffer, linear to -1 at the limit, -1 past it
    assert expected == (0.0 if length <= limit else max(-1.0, (limit - length) / 20))


TESTS = json.dumps(["assert sq(3) == 9"])
DISPATCH = [
    # (completion as TRL passes it, gold answer, verifier column, reasoning mode, expected reward)
    ("so</think>#### 4", "4", "math", "on", 1.0),  # math, as `accuracy` scores it
    ("so</think>#### 4", "4", None, "on", 1.0),  # a null verifier is math
    ("```python\ndef sq(x):\n    return x * x\n```", TESTS, "code", "off", 1.0),  # code, run in the sandbox
    (
        "```python\ndef sq(x):\n    return 9\n```",
        json.dumps(["assert sq(3) == 9", "assert sq(2) == 4"]),
        "code",
        "off",
        0.5,
    ),  # one of two tests
    ("```python\ndef sq(x):\n    return x * x\n```", TESTS, "code", "on", 0.0),  # reasoning on, never closed
    ("The Answer Is B", json.dumps([{"id": "change_case:english_lowercase"}]), "ifeval", "off", 0.0),
    ("the answer is b", json.dumps([{"id": "change_case:english_lowercase"}]), "ifeval", "off", 1.0),
    ("hmm</think>\\boxed{B}", "B", "multiple_choice", "on", 1.0),
    ("hmm</think>\\boxed{B}", None, "multiple_choice", "on", None),  # no gold: the reward does not apply
]


@pytest.mark.parametrize(("completion", "gold", "verifier", "mode", "expected"), DISPATCH)
def test_verifier_reward_table(completion, gold, verifier, mode, expected):
    """The dispatcher scores each row with its own verifier; the single-verifier rewards agree with it."""
    got = REWARDS["verifier"]([completion], answer=[gold], verifier=[verifier], reasoning=[mode])
    assert got == [expected]
    single = {"code": "code", "ifeval": "instruction_following", "multiple_choice": "multiple_choice"}
    if verifier in single:
        assert REWARDS[single[verifier]]([completion], answer=[gold], reasoning=[mode]) == [expected]


def test_verifier_reward_mixed_batch():
    """One GRPO batch with a row of every kind; a dataset without a verifier column scores as math."""
    completions = ["</think>#### 4", "</think>(A)", "</think>```python\ndef sq(x):\n    return x * x\n```"]
    got = REWARDS["verifier"](completions, answer=["4", "B", TESTS], verifier=["math", "multiple_choice", "code"])
    assert got == [1.0, 0.0, 1.0]
    assert REWARDS["verifier"](["</think>#### 4"], answer=["4"]) == [1.0]


def test_rewards_accept_everything_trl_passes():
    """TRL calls rewards with prompts, completion_ids, every column and trainer hooks; the defaults assume reasoning
    on."""
    extra = dict(
        prompts=[[{"role": "user", "content": "2+2?"}]],
        completion_ids=[[1, 2]],
        trainer_state=None,
        log_extra=None,
        log_metric=None,
        prompt_id=["p0"],
    )
    assert accuracy(["4</think>#### 4"], answer=["4"], **extra) == [1.0]
    assert think_format(["4</think>#### 4"], answer=["4"], **extra) == [1.0]


def test_docstring_examples_hold():
    assert doctest.testmod(rl.rewards).failed == 0


def test_accuracy_agrees_with_human_labels_on_real_gsm8k_solutions():
    """OpenAI's GSM8K model solutions carry an is_correct label per solution (4 models x 1319 problems)."""
    path = shared_data("gsm8k", "example_model_solutions.jsonl")
    completions, golds, labels = [], [], []
    for row in map(json.loads, path.read_text().splitlines()):
        gold = row["ground_truth"].rsplit("A:", 1)[1].strip()  # the reference ends with "A: 18"
        for key in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
            sample = ast.literal_eval(row[key]) if isinstance(row[key], str) else row[key]
            completions.append(sample["solution"])  # no think block: scored as a reasoning-off answer
            golds.append(gold)
            labels.append(float(sample["is_correct"]))
    rewards = accuracy(completions, answer=golds, reasoning=["off"] * len(golds))
    agree = sum(r == label for r, label in zip(rewards, labels, strict=True))
    assert len(labels) == 5276 and sum(labels) == 2001  # 286 + 515 + 458 + 742 correct, per SOURCES.md
    assert agree == len(labels)  # measured: 5276 / 5276


REASONING_OF = [
    # (messages, mode the chat template would pick)
    ([{"role": "user", "content": "2+2?"}], None),  # no flag: the caller decides (template default is on)
    ([{"role": "system", "content": "/no_think"}, {"role": "user", "content": "2+2?"}], "off"),  # system flag
    ([{"role": "system", "content": "/no_think"}, {"role": "user", "content": "2+2? /think"}], "on"),  # last wins
    ([{"role": "user", "content": "a /think then /no_think"}], "off"),  # last within one message wins
    (
        [{"role": "assistant", "content": "/no_think"}, {"role": "user", "content": "x"}],
        None,
    ),  # assistants don't count
]


@pytest.mark.parametrize(("messages", "expected"), REASONING_OF)
def test_reasoning_of_table(messages, expected):
    assert reasoning_of(messages) == expected


def test_rl_prompts_flag_each_prompt_once():
    from datasets import Dataset

    rows = Dataset.from_list(
        [{"question": f"What is {i} plus 1?", "answer": f"{i} + 1\n#### {i + 1}"} for i in range(200)]
        + [{"question": "Already off? /no_think", "answer": "#### 0"}]
    )
    prompts = rl_prompts(rows, no_think_fraction=0.25, seed=0)
    assert prompts.column_names == ["prompt", "answer", "reasoning"] and prompts[3]["answer"] == "4"
    assert all(reasoning_of(p) == r for p, r in zip(prompts["prompt"], prompts["reasoning"], strict=True))
    off = prompts["reasoning"][:200].count("off")
    assert 30 <= off <= 70  # ~25% of the unflagged prompts
    assert prompts[200]["reasoning"] == "off" and prompts[200]["prompt"][0]["role"] == "user"  # kept as written
