"""`nanoforge eval`: pass@1 per mode from k samples, every sample judged by the shared verifier, eval.json in the
checkpoint; GSM8K, MATH and prompts-artifact formats are read with synth's field mapping."""

from __future__ import annotations

import json

import pytest
import torch

from pipelines.config import ConfigError
from pipelines.prompt_formats import assistant_content
from pipelines.verify import verify
from rl import evaluate


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_eval_writes_pass_at_1_per_mode(tiny_base, tmp_path):
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} plus 1?", "answer": f"#### {i + 1}"}) + "\n"
                            for i in range(5)))  # fmt: skip
    out = tmp_path / "eval.json"
    argv = ["--model", str(tiny_base), "--dataset", str(data), "--num_samples", "3", "--limit", "4",
            "--max_new_tokens", "8", "--output", str(out)]  # fmt: skip
    assert evaluate.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["problems"] == 4 and set(result["modes"]) == {"think", "no_think"}
    samples = [json.loads(line) for line in (tmp_path / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 4 * 3  # modes x problems x k
    for mode, stats in result["modes"].items():
        mine = [s for s in samples if s["mode"] == mode]
        reasoning = evaluate.MODES[mode]
        assert all(s["correct"] == verify(assistant_content(s["completion"], reasoning), s["answer"]) for s in mine)
        assert stats["pass@1"] == pytest.approx(sum(s["correct"] for s in mine) / len(mine))  # equal k per problem
        assert 0 < stats["mean_completion_tokens"] <= 8


def test_problem_formats(tmp_path):
    from datasets import Dataset

    gsm8k = Dataset.from_list([{"question": "Q?", "answer": "steps\n#### 1,200"}])
    math = Dataset.from_list([{"problem": "P?", "solution": "so \\boxed{\\frac{1}{2}}"}])
    prompts = Dataset.from_list([{"prompt": [{"role": "user", "content": "R?"}], "answer": "7"}])
    assert [p["answer"] for p in evaluate.to_problems(gsm8k, "g")] == ["1200"]
    assert [p["answer"] for p in evaluate.to_problems(math, "m")] == ["\\frac{1}{2}"]
    assert evaluate.to_problems(prompts, "p")[0]["messages"] == [{"role": "user", "content": "R?"}]
    with pytest.raises(ConfigError, match="expected `question`"):
        evaluate.to_problems(Dataset.from_list([{"text": "x"}]), "t")
