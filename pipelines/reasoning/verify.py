r"""The one math answer checker: `synth` uses it to label traces and GRPO uses it as its reward.

    >>> extract_answer(r"<think>2+2 is 4</think>The answer is \boxed{4}.")
    '4'
    >>> verify("<think>...</think>So she makes $18 a day.\n#### 18", gold="18")
    True
    >>> verify(r"The answer is \boxed{0.5}", gold=r"\frac{1}{2}")  # math-verify compares values, not strings
    True
    >>> verify("anything", gold=None) is None  # no gold answer: unknown, not wrong
    True

Extraction order (first that applies): the text after the last `</think>` (a completion that opened `<think>`
and never closed it has no answer); the last `\boxed{...}` (nested braces); the last `#### x`; the last number.
The extracted strings are compared with math-verify (sympy), with an exact numeric fast path for plain numbers
and a normalised string comparison when math-verify cannot parse either side.

Timeouts: math-verify guards each parse/compare with `signal.alarm`, which only works in the main thread of the
main interpreter (it raises ValueError elsewhere: Ray actor threads, TRL reward threads, thread pools). We pass
a timeout only in the main thread and otherwise bound the work by refusing answers longer than `MAX_ANSWER_CHARS`
and exponent towers, the inputs that make sympy hang.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from decimal import Decimal, InvalidOperation
from typing import Any

TIMEOUT_S = 5  # per math-verify parse / compare, main thread only
MAX_ANSWER_CHARS = 300  # longer "answers" are prose or garbage; sympy on them is slow
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_PLAIN_NUMBER = re.compile(r"^-?(?:\d+(?:,\d{3})*|\d*)(?:\.\d+)?$")
_TOWER = re.compile(r"\^\s*\{?[^}]*\^")  # 9^{9^9}: sympy would try to evaluate it

logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns once per process when timeouts are off


def _find_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` with balanced braces, or `\\boxed x`."""
    boxed, fbox = text.rfind("\\boxed"), text.rfind("\\fbox")
    if boxed < 0 and fbox < 0:
        return None
    i = boxed + len("\\boxed") if boxed > fbox else fbox + len("\\fbox")
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return None
    if text[i] != "{":  # `\boxed 5`
        m = re.match(r"[^\s$]+", text[i:])
        return m.group(0) if m else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None  # unbalanced: truncated mid-answer


def extract_answer(text: str) -> str | None:
    """The final answer in a completion (see the module docstring for the order), or None."""
    if not text:
        return None
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    elif "<think>" in text:
        return None  # thinking never finished (truncated): no answer was given
    boxed = _find_boxed(text)
    if boxed:
        return boxed
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip()
        line = tail.splitlines()[0].strip() if tail else ""
        if line:
            return line.replace(",", "") if _PLAIN_NUMBER.match(line) else line
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "").rstrip(".") if numbers else None


def gold_from_gsm8k(answer: str) -> str | None:
    """GSM8K gold: the number after `####` in the worked solution (commas removed), e.g. `"...\\n#### 1,200"` ->
    `"1200"`."""
    if not answer or "####" not in answer:
        return None
    gold = answer.rsplit("####", 1)[1].strip().replace(",", "")
    return gold or None


def gold_from_math(solution: str) -> str | None:
    """MATH gold: the last `\\boxed{...}` of the reference solution (nested braces kept)."""
    return _find_boxed(solution) if solution else None


def _timeout() -> int | None:
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _normalise(answer: str) -> str:
    s = answer.strip().strip("$").strip()
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    s = re.sub(r"\\[,;!: ]|\\left|\\right|\s+", "", s)
    return s.rstrip(".").lower()


def _number(s: str) -> Decimal | None:
    s = s.strip().strip("$").strip()
    if not _PLAIN_NUMBER.match(s) or not any(c.isdigit() for c in s):
        return None
    try:
        return Decimal(s.replace(",", ""))
    except InvalidOperation:
        return None


@functools.lru_cache(maxsize=65536)
def _parse(answer: str) -> tuple[Any, ...]:
    from math_verify import parse

    try:
        return tuple(parse(f"\\boxed{{{answer}}}", parsing_timeout=_timeout()))
    except Exception:  # math-verify's own errors (and TimeoutException) mean "could not parse"
        return ()


def answers_match(predicted: str, gold: str) -> bool:
    """Whether two extracted answer strings denote the same value (math-verify, then fallbacks)."""
    a, b = _number(predicted), _number(gold)
    if a is not None and b is not None:  # fast exact path for the common GSM8K case
        return abs(a - b) <= Decimal("1e-6") * max(Decimal(1), abs(b))
    if len(predicted) > MAX_ANSWER_CHARS or _TOWER.search(predicted):
        return _normalise(predicted) == _normalise(gold)
    gold_parsed, pred_parsed = _parse(gold), _parse(predicted)
    if gold_parsed and pred_parsed:
        from math_verify import verify as mv_verify

        try:
            if mv_verify(list(gold_parsed), list(pred_parsed), timeout_seconds=_timeout()):
                return True
        except Exception:
            pass
    return _normalise(predicted) == _normalise(gold)


def verify(completion: str | list[dict[str, str]], gold: str | None) -> bool | None:
    """True/False when the completion's final answer equals `gold`; None when there is no gold answer.

    `completion` is the model text (or a TRL conversational completion: the last message's content is used).
    A completion without an extractable answer is False.
    """
    if gold is None or not str(gold).strip():
        return None
    if isinstance(completion, list):
        completion = completion[-1]["content"] if completion else ""
    predicted = extract_answer(completion or "")
    if predicted is None:
        return False
    return answers_match(predicted, str(gold).strip())
