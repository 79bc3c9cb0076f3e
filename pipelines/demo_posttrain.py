"""demo-posttrain-data: the post-training sets beyond math for the Nano 2-shaped demo recipe, generated from a seed.

Local:    nanoforge demo-posttrain-data --output_dir runs/nano2_demo/posttrain_data
Cluster:  the same command (a few KB of JSONL; real runs name Hub sets instead)

Writes, beside `manifest.json`:
  instructions/train.jsonl  IF RL prompts: `messages` (a request with one or two verifiable constraints written out),
                            `verifier: ifeval`, `answer` = the IFEval constraints as JSON
                            (pipelines/reasoning/ifeval.py)
  tools/train.jsonl         tool-calling SFT conversations: `tools` (a calculator spec, JSON text), `messages` with
                            an assistant `tool_calls` turn, the tool's result and the final answer
  code/train.jsonl          code RL prompts: `verifier: code`, `answer` = assert tests run in the sandbox
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.core.artifacts import Artifact
from pipelines.core.config import parse, to_dict

TOPICS = ["the sea", "autumn", "a bicycle", "coffee", "the moon", "a library", "rain", "trains", "bread", "mountains"]
# (instruction text, IFEval constraint) pairs; `{n}` and `{word}` are filled per prompt.
CONSTRAINTS = [
    ("Write everything in lowercase letters.", {"id": "change_case:english_lowercase"}),
    ("Do not use any commas.", {"id": "punctuation:no_comma"}),
    ("Use at least {n} words.", {"id": "length_constraints:number_words", "relation": "at least", "num_words": "{n}"}),
    (
        "Use fewer than {n} words.",
        {"id": "length_constraints:number_words", "relation": "less than", "num_words": "{n}"},
    ),
    ("Include the word '{word}'.", {"id": "keywords:existence", "keywords": ["{word}"]}),
    ("End your answer with the phrase 'That is all.'", {"id": "startend:end_checker", "end_phrase": "That is all."}),
    ("Wrap your whole answer in double quotes.", {"id": "startend:quotation"}),
    ("Give a title wrapped in double angle brackets, like <<title>>.", {"id": "detectable_format:title"}),
]
WORDS = ["blue", "quiet", "warm", "bright", "slow"]
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}
# (task, function name, tests): small functions with assert tests for the code verifier.
CODE_TASKS = [
    ("returns the sum of a list of numbers", "total", ["assert total([1, 2, 3]) == 6", "assert total([]) == 0"]),
    ("returns the largest element of a non-empty list", "largest", ["assert largest([3, 9, 2]) == 9"]),
    ("reverses a string", "reverse", ["assert reverse('abc') == 'cba'", "assert reverse('') == ''"]),
    ("returns True when a number is even", "is_even", ["assert is_even(4)", "assert not is_even(7)"]),
]


@dataclass
class DemoPosttrainConfig:
    output_dir: str = field(default="runs/nano2_demo/posttrain_data", metadata={"help": "Where the sets go."})
    num_instructions: int = field(default=64, metadata={"help": "IF RL prompts in instructions/train.jsonl."})
    num_tool_conversations: int = field(default=48, metadata={"help": "Conversations in tools/train.jsonl."})
    num_code_prompts: int = field(default=16, metadata={"help": "Prompts in code/train.jsonl."})
    seed: int = field(default=0, metadata={"help": "Everything derives from it."})
    force: bool = field(default=False, metadata={"help": "Regenerate even if up to date."})


def _fill(value, n: int, word: str):
    if isinstance(value, str):
        filled = value.replace("{n}", str(n)).replace("{word}", word)
        return int(filled) if value == "{n}" else filled
    if isinstance(value, list):
        return [_fill(v, n, word) for v in value]
    return value


def instruction_rows(num: int, rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(num):
        picked = rng.sample(CONSTRAINTS, rng.choice([1, 2]))
        n, word = rng.choice([5, 10, 20]), rng.choice(WORDS)
        text = f"Write a few sentences about {rng.choice(TOPICS)}. " + " ".join(_fill(t, n, word) for t, _ in picked)
        constraints = [{k: _fill(v, n, word) for k, v in c.items()} for _, c in picked]
        rows.append({"messages": [{"role": "user", "content": text}], "answer": constraints, "verifier": "ifeval"})
    return rows


def tool_rows(num: int, rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(num):
        a, b, op = rng.randint(2, 99), rng.randint(2, 99), rng.choice(["+", "*", "-"])
        expression, value = f"{a} {op} {b}", {"+": a + b, "*": a * b, "-": a - b}[op]
        call = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": expression}}}
        messages = [
            {"role": "user", "content": f"Use the calculator: what is {expression}? /no_think"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": str(value)},
            {"role": "assistant", "content": f"{expression} = {value}."},
        ]
        rows.append({"messages": messages, "tools": json.dumps([CALCULATOR])})
    return rows


def code_rows(num: int, rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(num):
        task, name, tests = rng.choice(CODE_TASKS)
        text = f"Write a Python function `{name}` that {task}. Answer with one ```python code block."
        rows.append({"messages": [{"role": "user", "content": text}], "answer": tests, "verifier": "code"})
    return rows


def write_sets(cfg: DemoPosttrainConfig, out: Path) -> dict[str, int]:
    sets = {
        "instructions": instruction_rows(cfg.num_instructions, random.Random(f"{cfg.seed}:if")),
        "tools": tool_rows(cfg.num_tool_conversations, random.Random(f"{cfg.seed}:tools")),
        "code": code_rows(cfg.num_code_prompts, random.Random(f"{cfg.seed}:code")),
    }
    for name, rows in sets.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {name: len(rows) for name, rows in sets.items()}


def parse_args(argv: list[str] | None = None) -> DemoPosttrainConfig:
    return parse(DemoPosttrainConfig, argv=argv)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    art = Artifact(cfg.output_dir, kind="demo-data", stage="demo-posttrain-data", config=to_dict(cfg))
    if art.up_to_date() and not cfg.force:
        print(art.skip_message())
        return 0
    with art.writing(resume=False) as tmp:
        art.counts = write_sets(cfg, tmp)
    print(f"[demo-posttrain-data] {art.counts} -> {cfg.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
