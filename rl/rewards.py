"""GRPO rewards: plain functions with TRL's signature `f(completions, **columns) -> list[float | None]`.

TRL calls each reward with the batch's `prompts`, `completions` (strings, or one-message lists for conversational
prompts), `completion_ids` and every dataset column (here `answer` and `reasoning`). A reward returns one float
per completion, or None where it does not apply (TRL ignores it there). `rl/grpo.py` picks rewards by name from
`REWARDS` (`reward_funcs` in the YAML) and weighs them with TRL's `reward_weights`.

Completions are scored as the assistant turn the chat template renders: with reasoning on, the template's
generation prompt already opened `<think>\\n`, so a completion is `reasoning</think>answer`; with reasoning off
it opened and closed `<think></think>`, so a completion is just the answer.
"""

from __future__ import annotations

from pipelines.prompt_formats import assistant_content
from pipelines.verify import verify


def _text(completion: str | list[dict]) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else completion


def _modes(reasoning: list[str] | None, n: int) -> list[str]:
    return list(reasoning) if reasoning is not None else ["on"] * n  # the template's default is reasoning on


def accuracy(
    completions: list, answer: list[str | None], reasoning: list[str] | None = None, **_
) -> list[float | None]:
    """1.0 when the final answer equals the gold `answer` (the verifier synth uses), 0.0 when not, None without gold.

    >>> accuracy(["2 and 2 make 4.</think>The answer is \\\\boxed{4}.", "4 is wrong, so</think>#### 5"], answer=["4", "4"])
    [1.0, 0.0]
    >>> accuracy(["still thinking about 4"], answer=["4"])  # never closed </think>: no answer given
    [0.0]
    >>> accuracy(["#### 4"], answer=["4"], reasoning=["off"]), accuracy(["#### 4"], answer=[None])
    ([1.0], [None])
    """
    modes = _modes(reasoning, len(completions))
    rewards = []
    for completion, gold, mode in zip(completions, answer, modes, strict=True):
        ok = verify(assistant_content(_text(completion), mode), gold)
        rewards.append(None if ok is None else float(ok))
    return rewards


def think_format(completions: list, reasoning: list[str] | None = None, **_) -> list[float]:
    """1.0 for a well-formed turn in its mode, else 0.0.

    Reasoning on: the completion closes the think block exactly once, opens no other, and has an answer after it.
    Reasoning off: the completion has no think tags at all and is not empty.

    >>> think_format(["a plan</think>The answer is 4.", "a plan, then nothing</think>", "<think>again</think>4"])
    [1.0, 0.0, 0.0]
    >>> think_format(["The answer is 4.", "x</think>4"], reasoning=["off", "off"])
    [1.0, 0.0]
    """
    rewards = []
    for completion, mode in zip(completions, _modes(reasoning, len(completions)), strict=True):
        text = _text(completion)
        if mode == "off":
            ok = "<think>" not in text and "</think>" not in text and bool(text.strip())
        else:
            ok = "<think>" not in text and text.count("</think>") == 1 and bool(text.split("</think>")[1].strip())
        rewards.append(float(ok))
    return rewards


def overlong_penalty(max_completion_length: int, overlong_buffer: int):
    """DAPO's soft overlong penalty (arXiv 2503.14476, eq. 13), as TRL ships it (`get_soft_overlong_punishment`):
    0 up to `max - buffer` tokens, then falling linearly to -1 at `max_completion_length` (where TRL cuts the
    completion off). `rl/grpo.py` builds it with the two lengths from the YAML; it reads `completion_ids`.

    >>> overlong_penalty(max_completion_length=100, overlong_buffer=20)([[1] * 80, [1] * 90, [1] * 100])
    [0.0, -0.5, -1.0]
    """
    from trl.rewards import get_soft_overlong_punishment

    return get_soft_overlong_punishment(max_completion_len=max_completion_length, soft_punish_cache=overlong_buffer)


# "overlong" is built from the run's lengths (see rl/grpo.py), the others are used as they are.
REWARDS = {"accuracy": accuracy, "think_format": think_format, "overlong": overlong_penalty}
