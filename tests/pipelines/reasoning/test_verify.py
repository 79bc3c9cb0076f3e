"""The one verifier: agreement with human/grader correctness labels on real model solutions, and a case table."""

from __future__ import annotations

import ast
import json
import threading

import pytest
from datapaths import shared_data

from pipelines.reasoning.verify import answers_match, extract_answer, gold_from_gsm8k, gold_from_math, verify

GSM8K_MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def test_agreement_with_gsm8k_labels():
    """OpenAI's GSM8K example solutions (4 models x 1319 problems) carry is_correct labels; measured 5276/5276."""
    rows = [json.loads(line) for line in shared_data("gsm8k", "example_model_solutions.jsonl").open()]
    agree = total = 0
    for row in rows:
        gold = extract_answer(row["ground_truth"])  # the reference ends "A: 18"
        for model in GSM8K_MODELS:
            sample = row[model] if isinstance(row[model], dict) else ast.literal_eval(row[model])
            agree += verify(sample["solution"], gold) == sample["is_correct"]
            total += 1
    assert total == 4 * 1319
    assert agree / total >= 0.995, f"agreement {agree}/{total}"


def test_agreement_with_qwen_math_labels():
    """Qwen2.5-Math CoT samples on 100 MATH problems x 8 with grader labels; measured 799/800.

    The one disagreement is gold `10{,}000` vs answer `10000`, which Qwen's grader marks wrong and we accept.
    """
    rows = [json.loads(line) for line in shared_data("qwen25math_eval_rm_maj_example", "math_cot_100.jsonl").open()]
    agree = total = 0
    for row in rows:
        for response, label in zip(row["code"], row["score"], strict=True):
            agree += verify(response, row["gt"]) == label
            total += 1
    assert total == 800
    assert agree / total >= 0.99, f"agreement {agree}/{total}"


def test_gold_helpers_on_real_data():
    train = [json.loads(line) for line in shared_data("gsm8k", "train.jsonl").read_text().splitlines()[:500]]
    golds = [gold_from_gsm8k(r["answer"]) for r in train]
    assert all(g and "," not in g for g in golds)
    assert all(verify(r["answer"], g) for r, g in zip(train, golds, strict=True))  # a worked solution verifies

    math = [json.loads(line) for line in shared_data("qwen25math_eval_rm_maj_example", "math_cot_100.jsonl").open()]
    same = sum(answers_match(gold_from_math(r["solution"]), r["gt"]) for r in math)
    assert same >= 99  # '\text{4:30 p.m.}' vs Qwen's normalised '4:30p..' is the known miss


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        (r"<think>3+4=7</think>The answer is \boxed{7}.", "7", True),  # answer after </think>
        (r"<think>maybe \boxed{8}</think>So \boxed{7}", "7", True),  # a box inside the thinking does not count
        ("<think>I think it is 7 but the budget ran out", "7", False),  # unfinished thinking: no answer
        ("<think>7</think>", "7", False),  # nothing after </think>
        (r"\boxed{\frac{1}{2}}", "0.5", True),  # values, not strings
        (r"\boxed{\dfrac{\sqrt{2}}{2}}", r"\frac{1}{\sqrt{2}}", True),  # nested braces, symbolic equality
        (r"so the set is \boxed{\{1, 2\}}", r"\{1,2\}", True),
        ("She pays 2 * 9 = 18 dollars.\n#### 1,800", "1800", True),  # GSM8K marker with thousands separator
        ("#### 18\nThe next problem has 99", "18", True),  # #### beats the last number
        ("So the total is $18.00.", "18", True),  # last number, currency and trailing zeros
        ("The answer is 17", "18", False),
        ("no numbers at all", "18", False),
        (r"\boxed{x^2+1}", "1+x^2", True),  # expressions compared symbolically
        (r"\boxed{9^{9^{9^{9}}}}", "3", False),  # an exponent tower is refused, not evaluated
        ("anything", None, None),  # no gold: unknown
        ("anything", "  ", None),
        ([{"role": "assistant", "content": r"\boxed{4}"}], "4", True),  # TRL conversational completion
    ],
)
def test_verify_cases(completion, gold, expected):
    assert verify(completion, gold) is expected


def test_verify_works_outside_the_main_thread():
    """math-verify's signal timeouts raise in threads (Ray actors, TRL reward workers); ours must not."""
    results = []
    thread = threading.Thread(target=lambda: results.append(verify(r"\boxed{\frac{2}{4}}", r"\frac12")))
    thread.start()
    thread.join()
    assert results == [True]
