"""The verifiers beyond math as tables (one comment per case): IFEval constraints, multiple choice, code run in the
sandbox; the `verifier` column carried from a prompt row through synth's traces to select's RL prompts."""

from __future__ import annotations

import doctest
import json

import pytest

import pipelines.reasoning.ifeval
import pipelines.reasoning.verifiers
from pipelines.reasoning.ifeval import followed
from pipelines.reasoning.prompt_formats import PromptError, to_prompt
from pipelines.reasoning.selection import select_prompt
from pipelines.reasoning.traces import to_trace
from pipelines.reasoning.verifiers import extract_choice, score

IFEVAL = [
    # (response, constraint, followed?)
    ("one two three", {"id": "length_constraints:number_words", "relation": "at least", "num_words": 3}, True),
    ("one two", {"id": "length_constraints:number_words", "relation": "at least", "num_words": 3}, False),  # short
    ("one two", {"id": "length_constraints:number_words", "relation": "less than", "num_words": 3}, True),
    ("Hi. Yes! Ok?", {"id": "length_constraints:number_sentences", "relation": "at least", "num_sentences": 3}, True),
    ("a\n***\nb", {"id": "length_constraints:number_paragraphs", "num_paragraphs": 2}, True),  # `***` dividers
    ("a\n***\n", {"id": "length_constraints:number_paragraphs", "num_paragraphs": 2}, False),  # an empty paragraph
    (
        "Hi there.\n\nSo it goes.",
        {
            "id": "length_constraints:nth_paragraph_first_word",
            "num_paragraphs": 2,
            "nth_paragraph": 2,
            "first_word": "so",
        },
        True,
    ),  # case-insensitive first word
    ("I like Paris and ROME", {"id": "keywords:existence", "keywords": ["paris", "rome"]}, True),
    ("I like Paris", {"id": "keywords:existence", "keywords": ["paris", "rome"]}, False),  # one keyword missing
    ("cat cat dog", {"id": "keywords:frequency", "keyword": "cat", "frequency": 2, "relation": "at least"}, True),
    ("a fine day", {"id": "keywords:forbidden_words", "forbidden_words": ["fine"]}, False),  # a forbidden word
    ("define it", {"id": "keywords:forbidden_words", "forbidden_words": ["fine"]}, True),  # only whole words count
    (
        "banana",
        {"id": "keywords:letter_frequency", "letter": "a", "let_frequency": 3, "let_relation": "at least"},
        True,
    ),
    ("Dear [name], at [address]", {"id": "detectable_content:number_placeholders", "num_placeholders": 2}, True),
    ("Body.\nP.S. bye", {"id": "detectable_content:postscript", "postscript_marker": "P.S."}, True),
    ("* a\n* b\n- c", {"id": "detectable_format:number_bullet_lists", "num_bullets": 3}, True),  # * and - bullets
    ("* a\n* b", {"id": "detectable_format:number_bullet_lists", "num_bullets": 3}, False),  # exactly, not at least
    ("My answer is yes.", {"id": "detectable_format:constrained_response"}, True),
    ("*one* and **two**", {"id": "detectable_format:number_highlighted_sections", "num_highlights": 2}, True),
    (
        "SECTION 1 a SECTION 2 b",
        {"id": "detectable_format:multiple_sections", "section_spliter": "SECTION", "num_sections": 2},
        True,
    ),
    ('```json\n{"a": 1}\n```', {"id": "detectable_format:json_format"}, True),  # fenced JSON is still JSON
    ("{'a': 1}", {"id": "detectable_format:json_format"}, False),  # a Python dict is not JSON
    ("<<My Title>>\ntext", {"id": "detectable_format:title"}, True),
    ("first ****** second", {"id": "combination:two_responses"}, True),
    ("same ****** same", {"id": "combination:two_responses"}, False),  # the two responses must differ
    ("Say hi. Hi!", {"id": "combination:repeat_prompt", "prompt_to_repeat": "say hi."}, True),
    ("... Any other questions?", {"id": "startend:end_checker", "end_phrase": "Any other questions?"}, True),
    ('"quoted"', {"id": "startend:quotation"}, True),
    (
        "THE END IS NEAR ok",
        {"id": "change_case:capital_word_frequency", "capital_frequency": 4, "capital_relation": "at least"},
        True,
    ),
    ("ALL CAPS", {"id": "change_case:english_capital"}, True),
    ("all lower", {"id": "change_case:english_lowercase"}, True),
    ("no commas", {"id": "punctuation:no_comma"}, True),
    ("yes, a comma", {"id": "punctuation:no_comma"}, False),
    ("x", {"id": "punctuation:no_comma", "unused_kwarg": None}, True),  # IFEval rows carry unset kwargs as None
]


@pytest.mark.parametrize(("response", "constraint", "expected"), IFEVAL)
def test_ifeval_table(response, constraint, expected):
    assert followed(response, [constraint]) == [expected]


def test_ifeval_unknown_instruction_is_an_error():
    with pytest.raises(ValueError, match="unknown instruction 'language:response_language'"):
        followed("hola", [{"id": "language:response_language", "language": "es"}])


CHOICES = [
    # (answer text, letter extracted)
    ("\\boxed{B}", "B"),  # boxed letter
    ("The answer is (C).", "C"),  # stated
    ("Answer: d", "D"),  # lower case
    ("Thinking of (A) and (B)...\nB", "B"),  # a line holding only the letter wins over a parenthesised mention
    ("I am not sure.", None),  # nothing chosen
]


@pytest.mark.parametrize(("text", "letter"), CHOICES)
def test_choice_table(text, letter):
    assert extract_choice(text) == letter


FENCE = "```python\n{}\n```"
ADD = FENCE.format("def add(a, b):\n    return a + b")
ASSERTS = json.dumps(["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 5"])
IO = json.dumps([{"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "10"}])
SUM_STDIN = FENCE.format("a, b = map(int, input().split())\nprint(a + b)")
SCORES = [
    # (assistant content, gold answer, verifier, score)
    ("<think>\n..</think>" + ADD, ASSERTS, "code", 2 / 3),  # two of three asserts pass (the third is wrong on purpose)
    ("<think>\n..</think>" + SUM_STDIN, IO, "code", 1.0),  # stdin/stdout cases, trailing newline ignored
    ("<think>\n..</think>" + FENCE.format("print(3)"), IO, "code", 0.5),  # hard-coded output passes one case
    ("<think>\n..</think>" + FENCE.format("import os\nos.system('curl x')"), IO, "code", 0.0),  # refused: no credit
    ("<think>\n..</think>" + FENCE.format("while True: pass"), ASSERTS, "code", 0.0),  # timeout
    ("<think>\n" + ADD, ASSERTS, "code", 0.0),  # code inside an unfinished think block is not an answer
    ("<think></think>def add(a, b): return a + b", ASSERTS, "code", 0.0),  # no fenced block
    (
        "<think></think>```\ndef add(a, b):\n    return a + b\n```",
        json.dumps({"tests": ["assert add(1, 1) == 2"]}),
        "code",
        1.0,
    ),  # an unlabelled fence, and tests wrapped as {"tests": [...]}
    ("<think></think>The answer is (B).", "B", "multiple_choice", 1.0),
    ("<think></think>The answer is (B).", "(b)", "multiple_choice", 1.0),  # gold written as "(b)"
    ("<think>\nit is B</think>The answer is C.", "B", "multiple_choice", 0.0),  # the reasoning's letter is ignored
    ("<think></think>all lowercase", json.dumps([{"id": "change_case:english_lowercase"}]), "ifeval", 1.0),
    (
        "<think></think>Yes, Sir",
        json.dumps([{"id": "change_case:english_lowercase"}, {"id": "punctuation:no_comma"}]),
        "ifeval",
        0.0,
    ),  # both broken
    ("<think></think>The answer is \\boxed{4}", "4", None, 1.0),  # no verifier column: math
    ("<think></think>The answer is 4", None, "code", None),  # no gold: not scored
]


@pytest.mark.parametrize(("content", "gold", "verifier", "expected"), SCORES)
def test_score_table(content, gold, verifier, expected):
    result = score(content, gold, verifier)
    assert result is None if expected is None else result == pytest.approx(expected)


def test_unknown_verifier_rejects_the_prompt():
    row = {"messages": [{"role": "user", "content": "hi"}], "answer": "x", "verifier": "vibes"}
    with pytest.raises(PromptError, match="unknown verifier 'vibes'"):
        to_prompt(row, "messages", {"prompt": "messages", "answer": "answer", "solution": None}, None)


def test_verifier_column_flows_from_prompt_to_rl_prompts():
    """A code row: tests given as a JSON list become JSON text; synth's trace is verified by the code verifier;
    select's RL prompt keeps the verifier for GRPO."""
    row = {
        "messages": [{"role": "user", "content": "Write add(a, b)."}],
        "verifier": "code",
        "answer": ["assert add(1, 2) == 3"],
    }
    prompt = to_prompt(row, "messages", {"prompt": "messages", "answer": "answer", "solution": None}, None)
    assert prompt["verifier"] == "code" and json.loads(prompt["answer"]) == ["assert add(1, 2) == 3"]
    generator = {"model": "m", "revision": None, "backend": "replay"}
    sample = {
        "id": f"{prompt['prompt_id']}:0",
        "prompt_id": prompt["prompt_id"],
        "messages": prompt["messages"],
        "answer": prompt["answer"],
        "verifier": "code",
        "reasoning": "off",
    }
    good = to_trace(sample | {"completion": ADD}, generator)
    bad = to_trace(sample | {"id": sample["id"][:-1] + "1", "completion": FENCE.format("add = max")}, generator)
    assert (good["verified"], bad["verified"], good["verifier"]) == (True, False, "code")
    cfg = type(
        "Cfg",
        (),
        dict(
            min_pass_rate=0.0,
            max_pass_rate=1.0,
            max_sft_per_prompt=None,
            no_think_ratio=0.0,
            budget_ratio=0.0,
            thinking_budgets=[],
            seed=0,
            max_pairs_per_prompt=1,
            pair_truncated=False,
            length_pairs=False,
            rl_min_pass_rate=0.0,
            rl_max_pass_rate=1.0,
        ),
    )
    out = dict(select_prompt([good, bad], cfg))
    assert out["rl"]["verifier"] == "code" and out["rl"]["pass_rate"] == 0.5


def test_docstring_examples_hold():
    assert doctest.testmod(pipelines.reasoning.verifiers).failed == 0
    assert doctest.testmod(pipelines.reasoning.ifeval).failed == 0
