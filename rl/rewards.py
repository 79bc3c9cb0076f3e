"""GRPO rewards: plain functions with TRL's signature `f(completions, **columns) -> list[float | None]`.

TRL calls each reward with the batch's `prompts`, `completions` (strings, or one-message lists for conversational
prompts), `completion_ids` and every dataset column (here `answer`, `verifier` and `reasoning`). A reward returns one
float per completion, or None where it does not apply (TRL ignores it there). `rl/grpo.py` picks rewards by name from
`REWARDS` (`reward_funcs` in the YAML) and weighs them with TRL's `reward_weights`.

Completions are scored as the assistant turn the chat template renders: with reasoning on, the template's
generation prompt already opened `<think>\\n`, so a completion is `reasoning</think>answer`; with reasoning off
it opened and closed `<think></think>`, so a completion is just the answer.
"""

from __future__ import annotations

from pipelines.reasoning.prompt_formats import assistant_content
from pipelines.reasoning.verifiers import score
from pipelines.reasoning.verify import verify


def _text(completion: str | list[dict]) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else completion


def _modes(reasoning: list[str] | None, n: int) -> list[str]:
    return list(reasoning) if reasoning is not None else ["on"] * n  # the template's default is reasoning on


def accuracy(
    completions: list, answer: list[str | None], reasoning: list[str] | None = None, **_
) -> list[float | None]:
    """1.0 when the final answer equals the gold `answer` (the verifier synth uses), 0.0 when not, None without gold.

    >>> accuracy(
    ...     ["2 and 2 make 4.</think>The answer is \\\\boxed{4}.", "4 is wrong, so</think>#### 5"], answer=["4", "4"]
    ... )
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


def _scores(completions: list, answer: list, verifiers: list, reasoning: list[str] | None) -> list[float | None]:
    modes = _modes(reasoning, len(completions))
    return [
        score(assistant_content(_text(c), mode), gold, name)
        for c, gold, name, mode in zip(completions, answer, verifiers, modes, strict=True)
    ]


def code(completions: list, answer: list[str | None], reasoning: list[str] | None = None, **_) -> list[float | None]:
    """Fraction of the row's tests (JSON in `answer`: assert lines or stdin/stdout cases) that the completion's last
    fenced code block passes, run in the sandbox (`pipelines/reasoning/sandbox.py`); None without tests.

    >>> code(
    ...     ["</think>```python\\ndef sq(x):\\n    return x * x\\n```"],
    ...     answer=['["assert sq(3) == 9", "assert sq(2) == 5"]'],
    ... )
    [0.5]
    """
    return _scores(completions, answer, ["code"] * len(completions), reasoning)


def instruction_following(
    completions: list, answer: list[str | None], reasoning: list[str] | None = None, **_
) -> list[float | None]:
    """Fraction of the row's IFEval constraints (JSON in `answer`, `pipelines/reasoning/ifeval.py`) the answer follows.

    >>> rule = '[{"id": "punctuation:no_comma"}, {"id": "change_case:english_lowercase"}]'
    >>> instruction_following(["</think>all lowercase, one comma", "</think>all lowercase"], answer=[rule, rule])
    [0.5, 1.0]
    """
    return _scores(completions, answer, ["ifeval"] * len(completions), reasoning)


def multiple_choice(
    completions: list, answer: list[str | None], reasoning: list[str] | None = None, **_
) -> list[float | None]:
    """1.0 when the chosen letter (`\\boxed{B}`, "the answer is (B)", a line with only "B") is the gold letter.

    >>> multiple_choice(["</think>The answer is (B).", "</think>\\boxed{C}"], answer=["B", "B"])
    [1.0, 0.0]
    """
    return _scores(completions, answer, ["multiple_choice"] * len(completions), reasoning)


def verifier(
    completions: list,
    answer: list[str | None],
    verifier: list[str | None] | None = None,
    reasoning: list[str] | None = None,
    **_,
) -> list[float | None]:
    """Each row scored by the verifier its `verifier` column names (math when the column is absent or null): the
    reward for a mixed set of math, code, instruction-following and multiple-choice prompts.

    >>> verifier(["</think>#### 4", "</think>Answer: A"], answer=["4", "B"], verifier=["math", "multiple_choice"])
    [1.0, 0.0]
    """
    return _scores(completions, answer, verifier or [None] * len(completions), reasoning)


# "overlong" is built from the run's lengths (see rl/grpo.py), the others are used as they are.
REWARDS = {
    "accuracy": accuracy,
    "think_format": think_format,
    "overlong": overlong_penalty,
    "code": code,
    "instruction_following": instruction_following,
    "multiple_choice": multiple_choice,
    "verifier": verifier,
}
