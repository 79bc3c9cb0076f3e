"""pass@k and maj@k on standard benchmarks, with reasoning on (`/think`) and off (`/no_think`), written to
`eval.json` in the checkpoint.

Local:    nanoforge eval --model runs/demo/sft --dataset runs/demo/demo_data/math/test.jsonl --num_samples 4
          nanoforge eval --model runs/demo/sft --benchmarks gsm8k math500 --limit 50 --num_samples 8 --ks 1 4 8
Cluster:  nanoforge eval --config sft/configs/eval_nano2_12b.yaml   (vLLM wherever it is installed on a GPU)

Benchmarks by name (BENCHMARKS: gsm8k, gsm_hard, math500, math, aime24, aime25, amc23) are read from `data_dir`
(the shared data folder); `--dataset` adds any other set. With n = `num_samples` samples per problem, pass@k is
the unbiased estimator of Chen et al. 2021 (arXiv 2107.03374), 1 - C(n-c, k) / C(n, k) for c correct samples,
averaged over the problems (pass@1 is the fraction of correct samples); maj@k splits the n samples into n // k
groups of k, takes each group's most common answer (equivalent answers counted together, ties to the earliest)
and averages whether it is right. Correct means the row's verifier (`pipelines/reasoning/verifiers.py`: math when the
row names none) gives the completion full marks, the same check `synth` labels traces with and GRPO rewards with. A
reasoning-on sample that never closes `</think>` within `max_new_tokens` has no answer and counts as wrong. The dataset
is GSM8K-style JSONL (`question`, `answer` ending in `#### 42`), MATH-style (`problem`, `answer` or a `\\boxed{}`
`solution`), or a prompts artifact (`prompt` or `messages`, plus `answer`). Each training stage runs this at its end
when its `math_eval_dataset` is set. Per-sample results go to `eval_samples.jsonl` beside `eval.json`.

Length (~450 lines): the metrics, the benchmark loaders and the two generators (transformers, vLLM) are one
evaluation; split, the vLLM generator's settings would drift from the transformers one it is checked against.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pipelines.core.config import ConfigError, parse
from pipelines.core.datasets import load_split
from pipelines.reasoning.prompt_formats import assistant_content, fields_for, to_prompt, with_reasoning_flag
from pipelines.reasoning.traces import predicted_answer
from pipelines.reasoning.verifiers import score
from pipelines.reasoning.verify import answers_match

MODES = {"think": "on", "no_think": "off"}  # eval mode -> the reasoning flag synth and the chat template use
# name -> (file under data_dir, synth's prompt_format, field renames); SOURCES.md in the data folder says where each
# file comes from.
BENCHMARKS = {
    "gsm8k": ("gsm8k/test.jsonl", "gsm8k", {}),
    "gsm_hard": ("gsm_hard/test.jsonl", "math", {"prompt": "input", "answer": "target"}),
    "math500": ("math500/test.jsonl", "math", {}),
    "math": ("math_test5000/test.jsonl", "math", {}),
    "aime24": ("aime24/test.jsonl", "math", {}),
    "aime25": ("aime25/test.jsonl", "math", {}),
    "amc23": ("amc23/test.jsonl", "math", {}),
}
DEFAULT_DATA_DIR = os.environ.get("NANOFORGE_SHARED_DATA", "../shared/data")


@dataclass
class EvalConfig:
    model: str | None = field(default=None, metadata={"help": "Checkpoint folder (or Hub id with `output` set)."})
    dataset: str | None = field(default=None, metadata={"help": "Math set: JSONL/Parquet file or artifact folder."})
    benchmarks: list[str] = field(
        default_factory=list, metadata={"help": f"Benchmarks by name, read from data_dir: {', '.join(BENCHMARKS)}."}
    )
    data_dir: str = field(default=DEFAULT_DATA_DIR, metadata={"help": "Folder holding the benchmark files."})
    num_samples: int = field(default=4, metadata={"help": "Samples per problem (n); pass@1 averages over them."})
    ks: list[int] = field(
        default_factory=list, metadata={"help": "k for pass@k and maj@k (each <= num_samples); default 1 and n."}
    )
    limit: int | None = field(default=None, metadata={"help": "Evaluate the first N problems only; null = all."})
    modes: list[str] = field(default_factory=lambda: list(MODES), metadata={"help": "Any of: think, no_think."})
    max_new_tokens: int = field(default=512, metadata={"help": "Token budget per completion (thinking included)."})
    temperature: float = field(default=0.6, metadata={"help": "Sampling temperature (Nano 2 uses 0.6); 0 = greedy."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling mass."})
    batch_size: int = field(default=32, metadata={"help": "Prompts per generate call (transformers backend)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    use_vllm: bool | None = field(
        default=None,
        metadata={
            "help": "Generate with vLLM instead of transformers; default (null): vLLM where it is installed and a "
            "CUDA GPU is present, else transformers. Both score with the same verifier."
        },
    )
    dtype: str = field(default="auto", metadata={"help": "Model dtype: auto (the checkpoint's), bfloat16, float32."})
    vllm_engine_kwargs: dict = field(
        default_factory=dict,
        metadata={
            "help": "Extra `vllm.LLM` kwargs (YAML only), e.g. enforce_eager. Prefix caching is off unless set here: "
            "for Mamba layers vLLM calls it experimental, and the eval's prompts share long prefixes."
        },
    )
    output: str | None = field(default=None, metadata={"help": "Where to write eval.json; default <model>/eval.json."})


def to_problems(rows, source: str) -> list[dict]:
    """Rows -> `{prompt_id, messages, answer}` with the field mapping `synth` uses (the format read off the
    columns)."""
    columns = set(rows.column_names)
    if "question" in columns:
        fmt, fields = "gsm8k", fields_for("gsm8k", {})
    elif "problem" in columns:
        fmt, fields = "math", fields_for("math", {})
    elif columns & {"prompt", "messages"}:
        fmt, fields = "messages", fields_for("messages", {"prompt": "prompt" if "prompt" in columns else "messages"})
    else:
        raise ConfigError(f"{source}: expected `question`, `problem`, `prompt` or `messages`; got {sorted(columns)}")
    return [to_prompt(row, fmt, fields, None) for row in rows]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), as a
    product so that large n does not overflow.

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 4), pass_at_k(4, 0, 2), round(pass_at_k(4, 1, 2), 4)
    (0.25, 1.0, 0.0, 0.5)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority_correct(answers: list[str | None], correct: list[bool], same: Callable[[str, str], bool]) -> bool:
    """Whether the most common answer among samples is right: equivalent answers (`same`) count together, a tie
    goes to the answer seen first, samples without an answer do not vote.

    >>> majority_correct(["4", "5", "4.0"], [True, False, True], lambda a, b: float(a) == float(b))
    True
    >>> majority_correct(["5", "4", None, None], [False, True, False, False], lambda a, b: a == b)  # tie: first
    False
    """
    clusters: list[list[int]] = []  # sample indexes per distinct answer, in order of first appearance
    for i, a in enumerate(answers):
        if a is None:
            continue
        home = next((c for c in clusters if same(answers[c[0]], a)), None)
        home.append(i) if home is not None else clusters.append([i])
    if not clusters:
        return False
    best = max(clusters, key=len)  # max keeps the first of equal lengths: the earliest answer wins a tie
    return correct[best[0]]


def maj_at_k(answers: list[str | None], correct: list[bool], k: int, same: Callable[[str, str], bool]) -> float:
    """maj@k from n samples: the n // k disjoint groups of k (in sample order), each voting; the mean of their results.

    >>> maj_at_k(["1", "1", "2", "2", "2", "3"], [True, True, False, False, False, False], 3, str.__eq__)
    0.5
    """
    groups = [range(s, s + k) for s in range(0, len(answers) - k + 1, k)]
    return sum(majority_correct([answers[i] for i in g], [correct[i] for i in g], same) for g in groups) / len(groups)


def same_answer(verifier: str) -> Callable[[str, str], bool] | None:
    """How maj@k groups answers for a verifier: math by value, multiple choice by letter; None: no voting (code and
    instruction following have no single answer to vote on)."""
    return {"math": answers_match, "multiple_choice": str.__eq__}.get(verifier)


def eval_sets(cfg: EvalConfig) -> list[tuple[str, str, str | None, dict]]:
    """(name, path, prompt_format or None to read it off the columns, field renames) for each set to evaluate."""
    unknown = [b for b in cfg.benchmarks if b not in BENCHMARKS]
    if unknown:
        raise ConfigError(f"unknown benchmarks {unknown}; choose from {list(BENCHMARKS)} or pass --dataset FILE")
    sets = [(Path(cfg.dataset).stem if cfg.dataset else "", cfg.dataset, None, {})] if cfg.dataset else []
    for name in cfg.benchmarks:
        file, fmt, renames = BENCHMARKS[name]
        path = Path(cfg.data_dir) / file
        if not path.exists():
            raise ConfigError(f"benchmark {name}: {path} not found (set data_dir to the folder holding {file})")
        sets.append((name, str(path), fmt, renames))
    if not sets:
        raise ConfigError("eval needs --dataset FILE or --benchmarks NAME ...")
    return sets


def load_problems(cfg: EvalConfig, path: str | None = None, fmt: str | None = None, renames: dict | None = None):
    path = path or cfg.dataset
    rows = load_split(path)
    if cfg.limit is not None:
        rows = rows.select(range(min(cfg.limit, len(rows))))
    if fmt:
        problems = [to_prompt(row, fmt, fields_for(fmt, renames or {}), None) for row in rows]
    else:
        problems = to_problems(rows, path)
    missing = sum(p["answer"] is None for p in problems)
    if missing:
        raise ConfigError(f"{path}: {missing} of {len(problems)} problems have no gold answer")
    return problems


def transformers_generator(cfg: EvalConfig) -> Callable[[list[str]], list[list[dict]]]:
    """k samples per prompt text with `model.generate`: `[{"text", "tokens", "truncated"}]` per prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=cfg.dtype)
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    eos = set(model.generation_config.eos_token_id or [tokenizer.eos_token_id]) | {tokenizer.eos_token_id}
    sampling = dict(temperature=cfg.temperature, top_p=cfg.top_p) if cfg.temperature else {}

    def generate(texts: list[str]) -> list[list[dict]]:
        out: list[list[dict]] = []
        for start in range(0, len(texts), cfg.batch_size):
            batch = tokenizer(
                texts[start : start + cfg.batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(model.device)
            with torch.no_grad():
                ids = model.generate(
                    **batch,
                    max_new_tokens=cfg.max_new_tokens,
                    num_return_sequences=cfg.num_samples,
                    pad_token_id=tokenizer.pad_token_id,
                    do_sample=bool(sampling),
                    **sampling,
                )
            new = ids[:, batch["input_ids"].shape[1] :].tolist()
            for i in range(0, len(new), cfg.num_samples):
                out.append([])
                for seq in new[i : i + cfg.num_samples]:
                    end = next((j for j, t in enumerate(seq) if t in eos), None)
                    kept = seq if end is None else seq[: end + 1]
                    text = tokenizer.decode(kept, skip_special_tokens=True)
                    out[-1].append({"text": text, "tokens": len(kept), "truncated": end is None})
        return out

    return generate


def use_vllm(cfg: EvalConfig) -> bool:
    """`use_vllm` as set, or (unset) whether vLLM is installed and a CUDA GPU is present."""
    if cfg.use_vllm is not None:
        return cfg.use_vllm
    import importlib.util

    import torch

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def vllm_memory_fraction(free: int, total: int, headroom: float = 0.9) -> float:
    """vLLM's `gpu_memory_utilization` is a share of the whole GPU that must be free when it starts; at the end of a
    training stage the trainer's model still holds part of it, so ask for a share of what is free."""
    fraction = headroom * free / total
    if fraction < 0.05:
        raise ConfigError(
            f"only {free / 2**30:.1f} of {total / 2**30:.1f} GiB of GPU memory is free for the vLLM eval; set "
            "use_vllm: false (transformers) or evaluate with `nanoforge eval` after training"
        )
    return round(fraction, 3)


def checkpoint_dtype(cfg: EvalConfig) -> str:
    """`dtype`, with auto read from the checkpoint's config as transformers reads it: vLLM's own auto runs a
    float32 checkpoint in bfloat16, and the two backends would then score different models."""
    if cfg.dtype != "auto":
        return cfg.dtype
    config = Path(cfg.model or "") / "config.json"
    found = json.loads(config.read_text()) if config.is_file() else {}
    return str(found.get("dtype") or found.get("torch_dtype") or "auto")


def vllm_dtype(cfg: EvalConfig) -> str:
    """The dtype vLLM runs: the checkpoint's (`checkpoint_dtype`), except that `auto` runs a float32 hybrid in
    bfloat16. vLLM 0.26 serves float32 only through FlexAttention, which needs a power-of-two KV block, and on a
    hybrid the block is sized to hold one sequence's Mamba state: the engine did not start (block 48, tiny model
    on the H200). Training stages save float32 master weights, so without this `nanoforge eval` of their output
    would fail on a GPU; `--dtype float32` asks for float32 anyway, and `--use_vllm false` evaluates it in float32."""
    from sft.common import is_hybrid

    dtype = checkpoint_dtype(cfg)
    if cfg.dtype == "auto" and dtype == "float32" and cfg.model and is_hybrid(cfg.model):
        print(
            "[eval] float32 hybrid checkpoint: vLLM runs it in bfloat16 (it serves float32 hybrids only through "
            "FlexAttention, which refuses their KV block size); --use_vllm false evaluates it in float32",
            file=sys.stderr,
        )
        return "bfloat16"
    return dtype


def prompt_token_ids(tokenizer, texts: list[str]) -> list[dict]:
    """vLLM prompts as the token ids transformers generates from. vLLM tokenizes a text prompt with the tokenizer's
    special tokens added: with a tokenizer that adds BOS, a second one after the chat template's own, and other
    completions than transformers gives for the same model."""
    return [{"prompt_token_ids": ids} for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def vllm_generator(cfg: EvalConfig) -> Callable[[list[str]], list[list[dict]]]:
    import torch
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from pipelines.reasoning.vllm_graphs import hybrid_engine_in_this_process
    from sft.common import is_hybrid

    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    free, total = torch.cuda.mem_get_info()
    kwargs = dict(enable_prefix_caching=False) | cfg.vllm_engine_kwargs
    if is_hybrid(cfg.model):  # float32 Mamba state; no breakable CUDA graphs, which replay a prefill's Mamba wrong
        kwargs = hybrid_engine_in_this_process(kwargs, kwargs.get("max_num_seqs"))  # a graph per decode batch size
    dtype = checkpoint_dtype(cfg)  # `evaluate` has resolved it (`vllm_dtype`)
    try:
        llm = LLM(
            model=cfg.model,
            dtype=dtype,
            seed=cfg.seed,
            gpu_memory_utilization=vllm_memory_fraction(free, total),
            **kwargs,
        )
    except RuntimeError as e:  # vLLM's engine process failed to start; its own error is in the log above
        hint = " (float32: try --dtype bfloat16, or --use_vllm false)" if dtype == "float32" else ""
        raise RuntimeError(f"vLLM could not start for {cfg.model} in {dtype}{hint}: {e}") from e
    params = SamplingParams(
        n=cfg.num_samples, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_new_tokens, seed=cfg.seed
    )

    def generate(texts: list[str]) -> list[list[dict]]:
        return [
            [{"text": o.text, "tokens": len(o.token_ids), "truncated": o.finish_reason == "length"} for o in r.outputs]
            for r in llm.generate(prompt_token_ids(tokenizer, texts), params)
        ]

    def close() -> None:  # the engine's process and GPU memory go now, not whenever the collector finds the LLM
        with contextlib.suppress(Exception):
            llm.llm_engine.engine_core.shutdown()

    generate.close = close
    return generate


def evaluate(cfg: EvalConfig) -> dict:
    """Generate, verify, and write `eval.json` (+ `eval_samples.jsonl`); returns the eval.json content.

    eval.json: `benchmarks: {name: {problems, modes: {think|no_think: {pass@k..., maj@k..., ...}}}}`; the top-level
    `problems` and `modes` repeat the first set's (`--dataset` when given), which the training stages report.
    """
    from transformers import AutoTokenizer

    if not cfg.model:
        raise ConfigError("eval needs --model (a checkpoint folder)")
    if not Path(cfg.model).is_dir() and not cfg.output:
        raise ConfigError(f"model folder not found: {cfg.model} (for a Hub model, set --output for eval.json)")
    unknown = set(cfg.modes) - set(MODES)
    if unknown:
        raise ConfigError(f"unknown modes {sorted(unknown)}; choose from {list(MODES)}")
    ks = sorted(set(cfg.ks or [1, cfg.num_samples]))
    if ks[0] < 1 or ks[-1] > cfg.num_samples:
        raise ConfigError(f"ks must lie in 1..num_samples ({cfg.num_samples}); got {ks}")
    sets = [(name, path, load_problems(cfg, path, fmt, renames)) for name, path, fmt, renames in eval_sets(cfg)]
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    output = Path(cfg.output or Path(cfg.model) / "eval.json")
    vllm = use_vllm(cfg)
    run = replace(cfg, dtype=vllm_dtype(cfg)) if vllm else cfg  # what generates, where `auto` is not what runs
    result = {"model": cfg.model, "dataset": cfg.dataset, "config": asdict(cfg), "benchmarks": {}}
    result["generated_with"] = {"backend": "vllm" if vllm else "transformers", "dtype": checkpoint_dtype(run)}
    generate = (vllm_generator if vllm else transformers_generator)(run)
    lines = []
    for name, path, problems in sets:
        bench = result["benchmarks"][name] = {"path": path, "problems": len(problems), "modes": {}}
        for mode in cfg.modes:
            stats, samples = evaluate_mode(problems, mode, generate, tokenizer, ks, cfg.num_samples)
            bench["modes"][mode] = stats
            lines += [json.dumps({"benchmark": name, **s}) for s in samples]
            shown = ", ".join(f"{k} {v:.3f}" for k, v in stats.items() if "@" in k and v is not None)
            print(f"[eval] {name} {mode}: {shown} over {len(problems)} problems x {cfg.num_samples} samples")
    getattr(generate, "close", lambda: None)()
    first = next(iter(result["benchmarks"].values()))
    result |= {"problems": first["problems"], "modes": first["modes"]}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    output.with_name(output.stem + "_samples.jsonl").write_text("".join(line + "\n" for line in lines))
    return result


def evaluate_mode(problems: list[dict], mode: str, generate, tokenizer, ks: list[int], n: int):
    """One set in one reasoning mode: (stats with pass@k / maj@k for each k, per-sample records)."""
    reasoning = MODES[mode]
    texts = [
        tokenizer.apply_chat_template(
            with_reasoning_flag(p["messages"], reasoning), tokenize=False, add_generation_prompt=True
        )
        for p in problems
    ]
    scores = {f"pass@{k}": [] for k in ks} | {f"maj@{k}": [] for k in ks if k > 1}
    tokens, truncated, records = [], [], []
    for p, samples in zip(problems, generate(texts), strict=True):
        verifier = p.get("verifier") or "math"
        contents = [assistant_content(s["text"], reasoning) for s in samples]
        correct = [score(c, p["answer"], verifier) == 1.0 for c in contents]
        answers = [predicted_answer(c, verifier) for c in contents]
        for k in ks:
            scores[f"pass@{k}"].append(pass_at_k(len(correct), sum(correct), k))
            same = same_answer(verifier)
            if k > 1 and same is not None:
                scores[f"maj@{k}"].append(maj_at_k(answers, correct, k, same))
        tokens += [s["tokens"] for s in samples]
        truncated += [s["truncated"] for s in samples]
        records += [
            {
                "mode": mode,
                "prompt_id": p["prompt_id"],
                "answer": p["answer"],
                "predicted": a,
                "correct": c,
                "completion": s["text"],
            }
            for s, a, c in zip(samples, answers, correct, strict=True)
        ]
    stats = {name: (sum(v) / len(v) if v else None) for name, v in scores.items()}
    stats |= {
        "num_samples": n,
        "mean_completion_tokens": sum(tokens) / len(tokens),
        "truncated_fraction": sum(truncated) / len(truncated),
    }
    return stats, records


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    return parse(EvalConfig, argv=argv)


def up_to_date(cfg: EvalConfig, output: Path) -> bool:
    """`output` holds this exact config's results, written after every file of a local model folder and dataset
    (a rerun of a recipe is then a no-op; a retrained model or an edited set is evaluated again)."""
    if not output.is_file() or json.loads(output.read_text()).get("config") != asdict(cfg):
        return False
    inputs = [Path(p) for p in (cfg.model, cfg.dataset) if p and Path(p).exists()]
    files = [f for p in inputs for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    newest = max((f.stat().st_mtime for f in files if not f.name.startswith(output.stem)), default=0.0)
    return output.stat().st_mtime >= newest


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    output = Path(cfg.output or Path(cfg.model or ".") / "eval.json")
    if up_to_date(cfg, output):
        print(f"[eval] {output} is up to date (same config, written after the model and data); delete it to rerun")
        return 0
    result = evaluate(cfg)
    print(
        f"[eval] wrote {Path(cfg.output or Path(cfg.model) / 'eval.json')}: "
        + ", ".join(
            f"{b} {m} pass@1 {r['pass@1']:.3f}" for b, v in result["benchmarks"].items() for m, r in v["modes"].items()
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
