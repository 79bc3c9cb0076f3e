"""Prompt formats for `synth`: a source row -> a prompt (`messages` + gold `answer`) and, for replay, its solution.

The mapping is chosen by `prompt_format` and each field can be renamed in the YAML (`prompt_field`,
`answer_field`, `solution_field`, `id_field`):

| format     | prompt (user turn)  | gold `answer`                                          | solution (replay)       |
|------------|---------------------|--------------------------------------------------------|-------------------------|
| `gsm8k`    | `question`          | the number after `####` in `answer`                    | `answer` (worked steps) |
| `math`     | `problem`           | `answer` when the row has it (MATH-500), else the last | `solution`              |
|            |                     | `\\boxed{}` of `solution`                              |                         |
| `messages` | `messages` (OpenAI) | `answer` when present, else none (verified = null)     | a final assistant turn  |

A row's `verifier` column (math, multiple_choice, code, ifeval; `pipelines/reasoning/verifiers.py`) says how its answer
is checked; without one it is math. A gold `answer` that is not a string (code tests, IFEval constraints as lists) is
kept as JSON text.

`prompt_id` is the row's `id_field` when configured (user ids kept), else a hash of the prompt messages, so the
same question gets the same id in every synth run (select joins runs on it).

Reasoning control follows Nemotron Nano 2: the system message carries `/think` or `/no_think`, and an assistant
turn is stored as `<think>reasoning</think>answer` (`<think></think>answer` without reasoning).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pipelines.reasoning.verifiers import check_verifier
from pipelines.reasoning.verify import gold_from_gsm8k, gold_from_math

DEFAULT_FIELDS: dict[str, dict[str, str | None]] = {
    "gsm8k": {"prompt": "question", "answer": None, "solution": "answer"},
    "math": {"prompt": "problem", "answer": "answer", "solution": "solution"},
    "messages": {"prompt": "messages", "answer": "answer", "solution": None},
}
THINK_FLAG = {"on": "/think", "off": "/no_think"}
_CALC = re.compile(r"<<[^>]*>>")  # GSM8K calculator annotations: "48/2 = <<48/2=24>>24"


class PromptError(ValueError):
    """A source row that cannot become a prompt (the message says which field is missing or malformed)."""


def fields_for(prompt_format: str, overrides: dict[str, str | None]) -> dict[str, str | None]:
    if prompt_format not in DEFAULT_FIELDS:
        raise ValueError(f"prompt_format must be one of {sorted(DEFAULT_FIELDS)}, got '{prompt_format}'")
    return {**DEFAULT_FIELDS[prompt_format], **{k: v for k, v in overrides.items() if v}}


def to_prompt(row: dict[str, Any], prompt_format: str, fields: dict[str, str | None], id_field: str | None) -> dict:
    """One source row -> `{prompt_id, messages, answer, solution}`; raises PromptError for unusable rows."""
    value = row.get(fields["prompt"])
    if prompt_format == "messages":
        messages = [{"role": m["role"], "content": m["content"]} for m in (value or [])]
        solution = None
        if messages and messages[-1]["role"] == "assistant":  # a finished conversation: replay can use its answer
            solution = messages.pop()["content"]
        if not messages or messages[-1]["role"] != "user":
            raise PromptError(f"field '{fields['prompt']}' must be a list of messages ending with a user turn")
    else:
        if not isinstance(value, str) or not value.strip():
            raise PromptError(f"field '{fields['prompt']}' is missing or empty")
        messages = [{"role": "user", "content": value.strip()}]
        solution = row.get(fields["solution"]) if fields["solution"] else None
    answer = row.get(fields["answer"]) if fields["answer"] else None
    if answer is None and prompt_format == "gsm8k" and solution:
        answer = gold_from_gsm8k(solution)
    elif answer is None and prompt_format == "math" and solution:
        answer = gold_from_math(solution)
    if id_field:
        if row.get(id_field) is None:
            raise PromptError(f"id field '{id_field}' is missing")
        prompt_id = str(row[id_field])
    else:
        prompt_id = hashlib.sha1(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]
    if answer is not None and not isinstance(answer, str):
        answer = json.dumps(answer) if isinstance(answer, list | dict) else str(answer)
    answer = None if answer is None or not answer.strip() else answer.strip()
    try:
        verifier = check_verifier(row.get("verifier"))
    except ValueError as e:
        raise PromptError(str(e)) from None
    return {
        "prompt_id": prompt_id,
        "messages": messages,
        "answer": answer,
        "solution": solution,
        "verifier": verifier,
    }


def with_reasoning_flag(messages: list[dict[str, str]], reasoning: str) -> list[dict[str, str]]:
    """Prepend (or extend) the system message with `/think` or `/no_think`."""
    flag = THINK_FLAG[reasoning]
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']} {flag}".strip()}, *messages[1:]]
    return [{"role": "system", "content": flag}, *messages]


def assistant_content(completion: str, reasoning: str) -> str:
    """A generated completion -> `<think>reasoning</think>answer`.

    Chat templates like Nano 2's prefill `<think>\\n` (reasoning on) or `<think></think>` (off) in the generation
    prompt, so the completion often starts inside or after the think block. A reasoning-on completion with no
    `</think>` never finished thinking (budget hit or early stop): it stays an open `<think>` with no answer.
    """
    text = completion.lstrip()
    if text.startswith("<think>"):
        return text
    if "</think>" in text:
        return "<think>\n" + text
    return ("<think>\n" + text) if reasoning == "on" else ("<think></think>" + text)


def split_reasoning(content: str) -> tuple[str | None, str]:
    """`<think>r</think>a` -> (r, a); an unfinished `<think>r` -> (r, ""); no think block -> (None, content)."""
    if content.startswith("<think>"):
        inner = content[len("<think>") :]
        if "</think>" not in inner:
            return inner.strip(), ""
        reasoning, answer = inner.split("</think>", 1)
        return reasoning.strip(), answer.strip()
    return None, content.strip()


def replay_completion(prompt_format: str, solution: str, answer: str | None, reasoning: str) -> str:
    """An existing worked solution -> assistant content in the traces format.

    GSM8K `steps\\n#### 72` becomes `<think>\\nsteps\\n</think>\\n\\nThe answer is \\\\boxed{72}.` (calculator
    annotations removed); a MATH solution becomes the reasoning with its boxed answer restated; a conversation's
    final assistant turn is used as written. With reasoning off, only the answer part is kept.
    """
    if prompt_format == "messages":
        content = solution.strip() if solution.lstrip().startswith("<think>") else assistant_content(solution, "off")
    else:
        steps = solution.rsplit("####", 1)[0] if prompt_format == "gsm8k" else solution
        steps = _CALC.sub("", steps).strip()
        final = f"The answer is $\\boxed{{{answer}}}$." if answer else steps.splitlines()[-1]
        content = f"<think>\n{steps}\n</think>\n\n{final}"
    if reasoning == "off":
        return "<think></think>" + split_reasoning(content)[1]
    return content
