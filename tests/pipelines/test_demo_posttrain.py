"""The Nano 2-shaped demo's extra sets: IF prompts whose constraints the ifeval verifier reads, tool conversations
the chat template renders with calls in the loss, code prompts whose tests a correct solution passes."""

from __future__ import annotations

import json

from pipelines import demo_posttrain
from pipelines.reasoning.ifeval import parse_constraints
from pipelines.reasoning.prompt_formats import fields_for, to_prompt
from pipelines.reasoning.verifiers import score


def test_sets_are_usable_by_their_consumers(tmp_path, tiny_base):
    from transformers import AutoTokenizer

    out = tmp_path / "data"
    assert (
        demo_posttrain.main(
            [
                "--output_dir",
                str(out),
                "--num_instructions",
                "20",
                "--num_tool_conversations",
                "4",
                "--num_code_prompts",
                "8",
            ]
        )
        == 0
    )
    rows = {
        name: [json.loads(line) for line in (out / name / "train.jsonl").read_text().splitlines()]
        for name in ("instructions", "tools", "code")
    }
    assert {k: len(v) for k, v in rows.items()} == {"instructions": 20, "tools": 4, "code": 8}
    fields = fields_for("messages", {})
    for row in rows["instructions"]:  # synth/GRPO read them as prompts with an ifeval verifier
        prompt = to_prompt(row, "messages", fields, None)
        assert prompt["verifier"] == "ifeval" and parse_constraints(prompt["answer"])
    tok = AutoTokenizer.from_pretrained(tiny_base)
    for row in rows["tools"]:
        text = tok.apply_chat_template(row["messages"], tools=json.loads(row["tools"]), tokenize=False)
        assert '<TOOLCALL>[{"name": "calculator", "arguments": {"expression": ' in text and "<TOOL_RESPONSE>[" in text
    solutions = {
        "total": "def total(xs):\n    return sum(xs)",
        "largest": "def largest(xs):\n    return max(xs)",
        "reverse": "def reverse(s):\n    return s[::-1]",
        "is_even": "def is_even(n):\n    return n % 2 == 0",
    }
    for row in rows["code"]:
        prompt = to_prompt(row, "messages", fields, None)
        name = row["messages"][0]["content"].split("`")[1]
        content = f"<think></think>```python\n{solutions[name]}\n```"
        assert score(content, prompt["answer"], prompt["verifier"]) == 1.0
