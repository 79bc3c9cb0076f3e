r"""One scorer per task, chosen by a row's `verifier` column: synth labels traces with it, select keeps what it
accepts, GRPO rewards with it (`rl/rewards.py`) and eval counts it correct.

| `verifier`           | the row's `answer` holds                     | score                              |
|----------------------|----------------------------------------------|------------------------------------|
| `math` (the default) | the gold value (`18`, `\frac{1}{2}`)         | 1.0 / 0.0 (math-verify)            |
| `multiple_choice`    | the gold letter (`B`)                        | 1.0 / 0.0                          |
| `code`               | JSON tests: `["assert f(1) == 2", ...]` or   | fraction of tests passed, run in   |
|                      | `[{"input": "1 2\n", "output": "3\n"}, ...]` | the sandbox                        |
|                      | (stdin/stdout)                               | (`pipelines/reasoning/sandbox.py`) |
| `ifeval`             | JSON IFEval constraints:                     | fraction of constraints followed   |
|                      | `[{"id": "punctuation:no_comma"}]`           |                                    |

    >>> score("<think>\nsum</think>The answer is \\boxed{4}.", "4", "math")
    1.0
    >>> score("<think></think>The answer is (C).", "B", "multiple_choice")
    0.0
    >>> score("<think></think>```python\ndef f(x):\n    return x + 1\n```", '["assert f(1) == 2"]', "code")
    1.0
    >>> score("<think></think>no commas here", '[{"id": "punctuation:no_comma"}]', "ifeval")
    1.0
    >>> score("<think>\nstill thinking", "4", "math"), score("anything", None, "math")
    (0.0, None)

`content` is an assistant turn as the traces store it (`<think>reasoning</think>answer`): only the text after the
think block is scored, and a turn that never closed its think block scores 0. A sample is `verified` when its
score is 1.0 (every test passed, every constraint followed).
"""

from __future__ import annotations

import json
import re

from pipelines.reasoning.ifeval import followed
from pipelines.reasoning.sandbox import run_python
from pipelines.reasoning.verify import verify

DEFAULT_VERIFIER = "math"
CODE_TIMEOUT_S = 5.0  # per sandbox run (one for all assert tests, one per stdin/stdout case)
CODE_MEMORY_MB = 512
MAX_CODE_CASES = 16  # stdin/stdout cases run per sample; a row with more is cut to its first 16

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_CHOICE_PATTERNS = [
    re.compile(r"\\boxed\{\s*\(?([A-J])\)?\s*\}"),  # \boxed{B}
    re.compile(r"answer\s*(?:is|:)?\s*[:\-]?\s*\**\s*\(?([A-J])\b\)?", re.IGNORECASE),  # "the answer is (B)"
    re.compile(r"^\s*\(?([A-J])[).:]?\s*$", re.MULTILINE),  # a line holding only "B" / "(B)" / "B."
    re.compile(r"\(([A-J])\)"),  # the last "(B)" anywhere
]


def final_text(content: str) -> str | None:
    """The answer part of an assistant turn: after the last `</think>`; None when a think block never closed."""
    if "</think>" in content:
        return content.rsplit("</think>", 1)[1].strip()
    return None if "<think>" in content else content.strip()


def extract_program(text: str) -> str | None:
    """The last fenced code block (```python preferred over other languages), or None."""
    blocks = _FENCE.findall(text)
    python = [code for lang, code in blocks if lang.lower() in ("python", "py", "python3", "")]
    return python[-1] if python else None


def extract_choice(text: str) -> str | None:
    """The chosen option letter (A-J): a boxed letter, then 'answer is X', then a line with only the letter."""
    for pattern in _CHOICE_PATTERNS:
        found = pattern.findall(text)
        if found:
            return found[-1].upper()
    return None


def score_math(text: str, gold: str) -> float:
    return float(bool(verify(text, gold)))


def score_multiple_choice(text: str, gold: str) -> float:
    return float(extract_choice(text) == gold.strip().strip("()").upper())


def score_code(text: str, gold: str) -> float:
    """Fraction of the row's tests the last code block passes in the sandbox."""
    tests = json.loads(gold)
    tests = tests["tests"] if isinstance(tests, dict) else tests
    program = extract_program(text)
    if program is None or not tests:
        return 0.0
    if all(isinstance(t, str) for t in tests):
        result = run_python(program, tests=tests, timeout_s=CODE_TIMEOUT_S, memory_mb=CODE_MEMORY_MB)
        return (result.tests_passed or 0) / len(tests)
    cases = tests[:MAX_CODE_CASES]
    passed = 0
    for case in cases:
        result = run_python(program, stdin=case["input"], timeout_s=CODE_TIMEOUT_S, memory_mb=CODE_MEMORY_MB)
        passed += result.error is None and _same_output(result.stdout, case["output"])
    return passed / len(cases)


def _same_output(got: str, expected: str) -> bool:
    """Output equal up to trailing whitespace on each line and blank lines at the end (as judges compare)."""
    return [line.rstrip() for line in got.rstrip().splitlines()] == [
        line.rstrip() for line in expected.rstrip().splitlines()
    ]


def score_ifeval(text: str, gold: str) -> float:
    results = followed(text, gold)
    return sum(results) / len(results) if results else 0.0


VERIFIERS = {
    "math": score_math,
    "multiple_choice": score_multiple_choice,
    "code": score_code,
    "ifeval": score_ifeval,
}


def check_verifier(name: str | None, where: str = "") -> str:
    """The verifier name a row asks for (None -> the default), or a ValueError naming the known ones."""
    name = name or DEFAULT_VERIFIER
    if name not in VERIFIERS:
        raise ValueError(f"{where}unknown verifier {name!r}; choose from {sorted(VERIFIERS)}")
    return name


def score(content: str, answer: str | None, verifier: str | None = None) -> float | None:
    """The score of one assistant turn in [0, 1] under the row's verifier; None when the row has no gold answer."""
    name = check_verifier(verifier)
    if answer is None or not str(answer).strip():
        return None
    text = final_text(content or "")
    if text is None:
        return 0.0
    return VERIFIERS[name](text, str(answer))
