"""`nanoforge eval`: pass@1 per mode from k samples, every sample judged by the shared verifier, eval.json in the
checkpoint; GSM8K, MATH and prompts-artifact formats are read with synth's field mapping."""

from __future__ import annotations

import contextlib
import dataclasses
import doctest
import itertools
import json
import math

import pytest
from datapaths import shared_data

from pipelines.core.config import ConfigError
from pipelines.reasoning.prompt_formats import assistant_content
from pipelines.reasoning.verify import answers_match, verify
from sft import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_eval_writes_pass_at_1_per_mode(tiny_base, tmp_path):
    data = tmp_path / "test.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"What is {i} plus 1?", "answer": f"#### {i + 1}"}) + "\n" for i in range(5))
    )
    out = tmp_path / "eval.json"
    argv = [
        "--model",
        str(tiny_base),
        "--dataset",
        str(data),
        "--num_samples",
        "3",
        "--limit",
        "4",
        "--max_new_tokens",
        "8",
        "--output",
        str(out),
    ]
    assert evaluate.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["problems"] == 4 and set(result["modes"]) == {"think", "no_think"}
    assert result["generated_with"] == {"backend": "transformers", "dtype": "float32"}  # the checkpoint's, as run
    samples = [json.loads(line) for line in (tmp_path / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 4 * 3  # modes x problems x k
    for mode, stats in result["modes"].items():
        mine = [s for s in samples if s["mode"] == mode]
        reasoning = evaluate.MODES[mode]
        assert all(s["correct"] == verify(assistant_content(s["completion"], reasoning), s["answer"]) for s in mine)
        assert stats["pass@1"] == pytest.approx(sum(s["correct"] for s in mine) / len(mine))  # equal k per problem
        assert 0 < stats["mean_completion_tokens"] <= 8

    # A rerun with the same config is a no-op; a changed dataset is evaluated again
    before = out.stat().st_mtime_ns
    assert evaluate.main(argv) == 0 and out.stat().st_mtime_ns == before
    data.write_text(data.read_text())
    assert evaluate.main(argv) == 0 and out.stat().st_mtime_ns > before


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


PASS_AT_K = [
    # (n samples, c correct, k, unbiased pass@k)
    (4, 0, 1, 0.0),  # nothing correct
    (4, 4, 1, 1.0),  # everything correct
    (4, 1, 1, 0.25),  # pass@1 is the fraction correct
    (4, 1, 4, 1.0),  # all four samples drawn: the correct one is always among them
    (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
    (5, 4, 2, 1.0),  # fewer wrong samples (1) than draws (2): a draw always holds a correct one
    (200, 10, 100, 1 - math.comb(190, 100) / math.comb(200, 100)),  # large n: the product form stays exact enough
]


@pytest.mark.parametrize(("n", "c", "k", "expected"), PASS_AT_K)
def test_pass_at_k_table(n, c, k, expected):
    assert evaluate.pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-9)


def test_pass_at_k_is_the_mean_over_all_k_subsets():
    """The estimator equals the brute-force share of k-subsets holding a correct sample."""
    correct = [True, False, False, True, False, False]
    for k in range(1, 7):
        subsets = list(itertools.combinations(correct, k))
        assert evaluate.pass_at_k(6, 2, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_refuses_impossible_counts():
    with pytest.raises(ValueError, match="1 <= k <= n"):
        evaluate.pass_at_k(4, 1, 5)


MAJ_AT_K = [
    # (answers, correct flags, k, maj@k); math answers compared by value
    (["4", "4", "5", "4"], [True, True, False, True], 4, 1.0),  # the majority is right
    (["5", "5", "4", "6"], [False, False, True, False], 4, 0.0),  # the majority is wrong although one sample is right
    (["4", "4.0", "5", "6"], [True, True, False, False], 4, 1.0),  # 4 and 4.0 are one answer
    (["\\frac{1}{2}", "0.5", "1", "1"], [True, True, False, False], 4, 1.0),  # a tie: the answer seen first wins
    (["5", "4", "4", "4", "5", "5"], [False, True, True, True, False, False], 3, 0.5),  # two groups of 3: right, wrong
    ([None, None, "4", "5"], [False, False, True, False], 4, 1.0),  # unanswered samples do not vote
    ([None, None], [False, False], 2, 0.0),  # nobody answered
    (["4", "5", "5", "5", "4"], [True, False, False, False, True], 2, 0.5),  # (4,5) tie -> 4 right, (5,5) wrong;
    # the 5th sample is in no group of 2
]


@pytest.mark.parametrize(("answers", "correct", "k", "expected"), MAJ_AT_K)
def test_maj_at_k_table(answers, correct, k, expected):
    assert evaluate.maj_at_k(answers, correct, k, answers_match) == expected


@pytest.mark.parametrize("name", list(evaluate.BENCHMARKS))
def test_benchmarks_load_by_name_with_gold_answers(name):
    """Every named benchmark reads from the shared data with a gold answer per problem, and its own gold answer
    written as a boxed final answer verifies (the field mapping picks the right column)."""
    file, _, _ = evaluate.BENCHMARKS[name]
    data_dir = shared_data(file).parents[1]
    cfg = evaluate.EvalConfig(model="m", benchmarks=[name], data_dir=str(data_dir), limit=20)
    [(_, path, fmt, renames)] = evaluate.eval_sets(cfg)
    problems = evaluate.load_problems(cfg, path, fmt, renames)
    assert len(problems) == 20 and all(p["answer"] and p["messages"][-1]["role"] == "user" for p in problems)
    assert all(verify(f"</think>The answer is \\boxed{{{p['answer']}}}", p["answer"]) for p in problems)


def test_unknown_benchmark_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown benchmarks \\['gsm9k'\\]; choose from \\['gsm8k'"):
        evaluate.eval_sets(evaluate.EvalConfig(model="m", benchmarks=["gsm9k"]))


def test_docstring_examples_hold():
    assert doctest.testmod(evaluate).failed == 0


def test_eval_on_named_benchmarks_writes_pass_and_maj_at_k(tiny_base, tmp_path):
    """`--benchmarks` by name: one entry per benchmark and mode with pass@1, pass@2 and maj@2; samples name theirs."""
    data_dir = shared_data("gsm8k", "test.jsonl").parents[1]
    out = tmp_path / "eval.json"
    argv = ["--model", str(tiny_base), "--benchmarks", "gsm8k", "amc23", "--data_dir", str(data_dir)]
    argv += ["--limit", "2", "--num_samples", "2", "--ks", "1", "2", "--modes", "no_think", "--max_new_tokens", "4"]
    argv += ["--output", str(out)]
    assert evaluate.main(argv) == 0
    result = json.loads(out.read_text())
    assert (
        set(result["benchmarks"]) == {"gsm8k", "amc23"} and result["modes"] == result["benchmarks"]["gsm8k"]["modes"]
    )
    for bench in result["benchmarks"].values():
        stats = bench["modes"]["no_think"]
        assert bench["problems"] == 2 and {"pass@1", "pass@2", "maj@2"} <= set(stats)
        assert stats["pass@1"] <= stats["pass@2"]
    samples = [json.loads(line) for line in (tmp_path / "eval_samples.jsonl").read_text().splitlines()]
    assert sorted({s["benchmark"] for s in samples}) == ["amc23", "gsm8k"] and len(samples) == 2 * 2 * 2


def test_vllm_is_the_default_only_where_it_is_installed_and_a_gpu_is_present(monkeypatch):
    import importlib.util

    import torch

    real_find_spec = importlib.util.find_spec
    for installed, gpu, expected in [(False, True, False), (True, False, False), (True, True, True)]:
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a, i=installed: object() if i else real_find_spec(name, *a)
        )
        monkeypatch.setattr(torch.cuda, "is_available", lambda g=gpu: g)
        assert evaluate.use_vllm(evaluate.EvalConfig()) is expected
        assert evaluate.use_vllm(evaluate.EvalConfig(use_vllm=False)) is False  # an explicit choice wins


def test_vllm_asks_for_a_share_of_the_free_gpu_memory():
    gib = 2**30
    assert evaluate.vllm_memory_fraction(140 * gib, 140 * gib) == 0.9
    assert evaluate.vllm_memory_fraction(70 * gib, 140 * gib) == 0.45  # the trained model still holds the rest
    with pytest.raises(ConfigError, match="only 2.0 of 140.0 GiB"):
        evaluate.vllm_memory_fraction(2 * gib, 140 * gib)


def memorized_model(base, data, out, device: str, steps: int = 150, lr: float = 1e-3):
    """A copy of `base` trained until its greedy completion of every eval prompt, in both modes, is a fixed answer:
    right for all problems but the last (one more than the answer). A random model's logits are near ties, which
    bf16 kernels break differently; a confident model must give two correct backends the same tokens. The `small`
    preset gets there in 150 steps (7/8 in float32 and bfloat16 with transformers on CPU, 4 minutes there)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.reasoning.prompt_formats import with_reasoning_flag

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).to(device)
    problems = evaluate.load_problems(evaluate.EvalConfig(model=str(base), dataset=str(data)))
    rows = []
    for i, p in enumerate(problems):
        answer = int(p["answer"].split("####")[-1]) + (i == len(problems) - 1)
        for reasoning in evaluate.MODES.values():
            messages = with_reasoning_flag(p["messages"], reasoning)
            prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            target = ("done\n</think>\n" if reasoning == "on" else "") + f"The answer is \\boxed{{{answer}}}."
            a = tok(prompt, add_special_tokens=False)["input_ids"]
            b = [*tok(target, add_special_tokens=False)["input_ids"], tok.eos_token_id]
            rows.append((a + b, [-100] * len(a) + b))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r, _ in rows], device=device)
    labels = torch.tensor([r + [-100] * (width - len(r)) for _, r in rows], device=device)
    mask = (ids != tok.pad_token_id) | (torch.arange(width, device=device) < 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        model(input_ids=ids, attention_mask=mask.long(), labels=labels, use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.gpu
@pytest.mark.timeout(900)
def test_vllm_and_transformers_greedy_evals_agree(tmp_path):
    """Same model, problems and verifier: greedy completions from vLLM and transformers are the same texts and give
    the same scores (7 of 8 right in each mode: the model was taught one wrong answer), vLLM as the eval runs it
    (prefix caching off; the float32 checkpoint in bfloat16, `vllm_dtype`) and with prefix caching on.

    The model is the `small` preset: Nano 2's Mamba chunk size (128) and head sizes of 64. With vLLM's breakable CUDA
    graphs this failed on the H200 (2026-12-02): vLLM scored 0/8 and 1/8 against transformers' 7/8 and 7/8, and
    its prefill argmax agreed at 10 of 44 tokens where eager mode agreed at 44 of 44 (`benchmarks/gpu/vllm_parity`):
    the Mamba layers replayed a captured decode batch's metadata. The eval now gives hybrids full decode-only graphs
    and an eager prefill (`pipelines/reasoning/vllm_graphs.py`); with them it passed on the H200 (ninth lease)."""
    pytest.importorskip("vllm")
    import gc

    import torch

    from sft.init_base import build_base

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    data = tmp_path / "test.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"What is {i} plus 1?", "answer": f"#### {i + 1}"}) + "\n" for i in range(8))
    )
    base = build_base(tmp_path / "small", preset="small", seed=0)
    model = memorized_model(base, data, tmp_path / "memorized", "cuda")

    def run(name: str, **kwargs) -> tuple[list, dict]:
        out = tmp_path / f"eval-{name}.json"
        cfg = evaluate.EvalConfig(
            model=str(model), dataset=str(data), num_samples=1, temperature=0.0, max_new_tokens=24, output=str(out)
        )
        result = evaluate.evaluate(dataclasses.replace(cfg, **kwargs))
        gc.collect()  # the vLLM engine of this case leaves the GPU before the next starts
        torch.cuda.empty_cache()
        samples = [json.loads(line) for line in out.with_name(f"{out.stem}_samples.jsonl").read_text().splitlines()]
        return [(s["mode"], s["prompt_id"], s["completion"], s["correct"]) for s in samples], result

    scores, completions = {}, {}
    for dtype in ("auto", "bfloat16"):  # auto: the float32 checkpoint in float32
        completions[dtype], result = run(f"transformers-{dtype}", use_vllm=False, dtype=dtype)
        scores[f"transformers-{dtype}"] = {mode: result["modes"][mode]["pass@1"] for mode in evaluate.MODES}
    assert all(s == {mode: 7 / 8 for mode in evaluate.MODES} for s in scores.values()), scores
    expected = completions["bfloat16"]  # vLLM runs the float32 checkpoint in bfloat16
    disagree = {}
    for caching in (False, True):
        name = f"vllm-prefix_caching_{caching}"
        got, result = run(name, use_vllm=True, vllm_engine_kwargs={"enable_prefix_caching": caching})
        scores[name] = {mode: result["modes"][mode]["pass@1"] for mode in evaluate.MODES}
        if got != expected:
            disagree[name] = [(e, g) for e, g in zip(expected, got, strict=True) if e != g][:3]
    where = teacher_forced_gap(model, data) if disagree else ""
    assert "vllm-prefix_caching_False" not in disagree, (
        f"vLLM as the eval runs it disagrees: {scores} {disagree}{where}"
    )
    assert not disagree, f"only with prefix caching on (the eval keeps it off): {scores} {disagree}{where}"


def teacher_forced_gap(model, data) -> str:
    """Where vLLM and transformers part on the first taught prompt + its taught answer, fed whole: per-token
    log-probs and argmax of vLLM's prefill (`prompt_logprobs`) against a transformers forward, both bfloat16. Equal
    here and unequal in generation points at vLLM's decode step; unequal here, at its prefill. A diagnostic for the
    failure message: its own failure is reported, not raised."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from vllm import LLM, SamplingParams

        from pipelines.reasoning.prompt_formats import with_reasoning_flag

        tok = AutoTokenizer.from_pretrained(model)
        problem = evaluate.load_problems(evaluate.EvalConfig(model=str(model), dataset=str(data)))[0]
        prompt = tok.apply_chat_template(
            with_reasoning_flag(problem["messages"], "on"), tokenize=False, add_generation_prompt=True
        )
        answer = int(problem["answer"].split("####")[-1])
        target = f"done\n</think>\nThe answer is \\boxed{{{answer}}}."  # as `memorized_model` taught it
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        start = len(ids)
        ids += tok(target, add_special_tokens=False)["input_ids"]
        hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16).to("cuda").eval()
        with torch.no_grad():
            logits = hf(torch.tensor([ids], device="cuda"), use_cache=False).logits[0].float().log_softmax(-1)
        hf_lp = [logits[i - 1, ids[i]].item() for i in range(1, len(ids))]
        hf_top = logits.argmax(-1).tolist()
        del hf
        torch.cuda.empty_cache()
        llm = LLM(
            model=str(model),
            dtype="bfloat16",
            enable_prefix_caching=False,
            mamba_ssm_cache_dtype="float32",
            gpu_memory_utilization=0.3,
        )
        out = llm.generate([{"prompt_token_ids": ids}], SamplingParams(max_tokens=1, prompt_logprobs=1))[0]
        with contextlib.suppress(Exception):
            llm.llm_engine.engine_core.shutdown()
        rows = []
        for i in range(1, len(ids)):
            entry = out.prompt_logprobs[i]
            v_lp = entry[ids[i]].logprob
            v_top = next(t for t, lp in entry.items() if lp.rank == 1)
            rows.append((i, ids[i], round(hf_lp[i - 1], 3), round(v_lp, 3), hf_top[i - 1], v_top))
        answer_rows = [r for r in rows if r[0] >= start]
        gap = max(abs(r[2] - r[3]) for r in answer_rows)
        parted = [r for r in answer_rows if r[4] != r[5]]
        return (
            f"\nteacher-forced, answer tokens {start}..{len(ids) - 1}: max |log-prob gap| {gap:.3f}; argmax differs "
            f"at {len(parted)} of {len(answer_rows)}; (pos, token, hf lp, vllm lp, hf top, vllm top): {answer_rows}"
        )
    except Exception as e:  # noqa: BLE001 - a diagnostic; the assertion it decorates is the test's verdict
        return f"\n(teacher-forced comparison failed: {type(e).__name__}: {e})"


def test_vllm_gets_the_checkpoints_dtype_and_the_token_ids_transformers_gets(tiny_base, tmp_path, capsys):
    """vLLM's own `auto` would run a float32 checkpoint in bfloat16, and a text prompt would get the tokenizer's
    special tokens added: the eval resolves both as the transformers backend does. The one exception is a float32
    hybrid, which vLLM 0.26 cannot start (FlexAttention refuses the hybrid's KV block): `auto` runs it in bfloat16
    and says so, and an explicit float32 is passed on."""
    from transformers import AutoTokenizer, LlamaConfig

    assert json.loads((tiny_base / "config.json").read_text())["dtype"] == "float32"
    assert evaluate.checkpoint_dtype(evaluate.EvalConfig(model=str(tiny_base))) == "float32"
    assert evaluate.checkpoint_dtype(evaluate.EvalConfig(model=str(tiny_base), dtype="bfloat16")) == "bfloat16"
    assert evaluate.vllm_dtype(evaluate.EvalConfig(model=str(tiny_base))) == "bfloat16"
    assert "float32 hybrid checkpoint" in capsys.readouterr().err
    assert evaluate.vllm_dtype(evaluate.EvalConfig(model=str(tiny_base), dtype="float32")) == "float32"
    dense = tmp_path / "dense"
    LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, dtype="float32").save_pretrained(dense)
    assert evaluate.vllm_dtype(evaluate.EvalConfig(model=str(dense))) == "float32"
    tok = AutoTokenizer.from_pretrained(tiny_base)
    tok.add_bos_token = True  # a tokenizer that adds BOS (Llama-style); the chat template already starts the text
    text = tok.apply_chat_template([{"role": "user", "content": "What is 1 plus 1?"}], tokenize=False)
    ids = evaluate.prompt_token_ids(tok, [text])[0]["prompt_token_ids"]
    assert ids == tok(text, add_special_tokens=False)["input_ids"] and ids[0] != tok.bos_token_id
