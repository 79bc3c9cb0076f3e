"""pass@1 on a math set, with reasoning on (`/think`) and off (`/no_think`), written to `eval.json` in the checkpoint.

Local:    nanoforge eval --model runs/demo/sft --dataset runs/demo/demo_data/math/test.jsonl --num_samples 4
Cluster:  nanoforge eval --config rl/configs/eval_nano2_12b.yaml   (vLLM on a GPU: `use_vllm: true`)

pass@1 is the fraction of correct samples, averaged over the problems (k = `num_samples` samples each, an unbiased
estimate with less variance than one sample). Correct means `pipelines.verify.verify` accepts the completion's
final answer, the same checker `synth` labels traces with and GRPO rewards with. A reasoning-on sample that never
closes `</think>` within `max_new_tokens` has no answer and counts as wrong. The dataset is GSM8K-style JSONL
(`question`, `answer` ending in `#### 42`), MATH-style (`problem`, `answer` or a `\\boxed{}` `solution`), or a
prompts artifact (`prompt` or `messages`, plus `answer`). Each training stage runs this at its end when its
`math_eval_dataset` is set. Per-sample results go to `eval_samples.jsonl` beside `eval.json`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.config import ConfigError, parse
from pipelines.prompt_formats import assistant_content, fields_for, to_prompt, with_reasoning_flag
from pipelines.verify import verify

MODES = {"think": "on", "no_think": "off"}  # eval mode -> the reasoning flag synth and the chat template use


@dataclass
class EvalConfig:
    model: str | None = field(default=None, metadata={"help": "Checkpoint folder (or Hub id with `output` set)."})
    dataset: str | None = field(default=None, metadata={"help": "Math set: JSONL/Parquet file or artifact folder."})
    num_samples: int = field(default=4, metadata={"help": "Samples per problem (k); pass@1 averages over them."})
    limit: int | None = field(default=None, metadata={"help": "Evaluate the first N problems only; null = all."})
    modes: list[str] = field(default_factory=lambda: list(MODES), metadata={"help": "Any of: think, no_think."})
    max_new_tokens: int = field(default=512, metadata={"help": "Token budget per completion (thinking included)."})
    temperature: float = field(default=0.6, metadata={"help": "Sampling temperature (Nano 2 uses 0.6); 0 = greedy."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling mass."})
    batch_size: int = field(default=32, metadata={"help": "Prompts per generate call (transformers backend)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    use_vllm: bool = field(default=False, metadata={"help": "Generate with vLLM (GPU) instead of transformers."})
    dtype: str = field(default="auto", metadata={"help": "Model dtype: auto (the checkpoint's), bfloat16, float32."})
    output: str | None = field(default=None, metadata={"help": "Where to write eval.json; default <model>/eval.json."})


def to_problems(rows, source: str) -> list[dict]:
    """Rows -> `{prompt_id, messages, answer}` with the field mapping `synth` uses (the format read off the columns)."""
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


def load_problems(cfg: EvalConfig) -> list[dict]:
    from sft.common import load_split

    rows = load_split(cfg.dataset)
    if cfg.limit is not None:
        rows = rows.select(range(min(cfg.limit, len(rows))))
    problems = to_problems(rows, cfg.dataset)
    missing = sum(p["answer"] is None for p in problems)
    if missing:
        raise ConfigError(f"{cfg.dataset}: {missing} of {len(problems)} problems have no gold answer")
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


def vllm_generator(cfg: EvalConfig) -> Callable[[list[str]], list[list[dict]]]:
    from vllm import LLM, SamplingParams

    # Nemotron-H keeps its Mamba state in float32 (a bf16 state drifts over long generations).
    llm = LLM(model=cfg.model, dtype=cfg.dtype, seed=cfg.seed, mamba_ssm_cache_dtype="float32")
    params = SamplingParams(
        n=cfg.num_samples, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_new_tokens, seed=cfg.seed
    )

    def generate(texts: list[str]) -> list[list[dict]]:
        return [
            [{"text": o.text, "tokens": len(o.token_ids), "truncated": o.finish_reason == "length"} for o in r.outputs]
            for r in llm.generate(texts, params)
        ]

    return generate


def evaluate(cfg: EvalConfig) -> dict:
    """Generate, verify, and write `eval.json` (+ `eval_samples.jsonl`); returns the eval.json content."""
    from transformers import AutoTokenizer

    if not cfg.model or not cfg.dataset:
        raise ConfigError("eval needs --model (a checkpoint folder) and --dataset (a math set)")
    if not Path(cfg.model).is_dir() and not cfg.output:
        raise ConfigError(f"model folder not found: {cfg.model} (for a Hub model, set --output for eval.json)")
    unknown = set(cfg.modes) - set(MODES)
    if unknown:
        raise ConfigError(f"unknown modes {sorted(unknown)}; choose from {list(MODES)}")
    problems = load_problems(cfg)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    output = Path(cfg.output or Path(cfg.model) / "eval.json")
    result = {
        "model": cfg.model,
        "dataset": cfg.dataset,
        "problems": len(problems),
        "config": asdict(cfg),
        "modes": {},
    }
    generate = (vllm_generator if cfg.use_vllm else transformers_generator)(cfg)
    lines = []
    for mode in cfg.modes:
        reasoning = MODES[mode]
        texts = [
            tokenizer.apply_chat_template(
                with_reasoning_flag(p["messages"], reasoning), tokenize=False, add_generation_prompt=True
            )
            for p in problems
        ]
        per_problem, tokens, truncated = [], [], []
        for p, samples in zip(problems, generate(texts), strict=True):
            correct = [bool(verify(assistant_content(s["text"], reasoning), p["answer"])) for s in samples]
            per_problem.append(sum(correct) / len(correct))
            tokens += [s["tokens"] for s in samples]
            truncated += [s["truncated"] for s in samples]
            lines += [
                json.dumps(
                    {
                        "mode": mode,
                        "prompt_id": p["prompt_id"],
                        "answer": p["answer"],
                        "correct": c,
                        "completion": s["text"],
                    }
                )
                for s, c in zip(samples, correct, strict=True)
            ]
        result["modes"][mode] = {
            "pass@1": sum(per_problem) / len(per_problem),
            "num_samples": cfg.num_samples,
            "mean_completion_tokens": sum(tokens) / len(tokens),
            "truncated_fraction": sum(truncated) / len(truncated),
        }
        print(
            f"[eval] {mode}: pass@1 {result['modes'][mode]['pass@1']:.3f} over {len(problems)} problems x "
            f"{cfg.num_samples} samples"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    output.with_name(output.stem + "_samples.jsonl").write_text("".join(line + "\n" for line in lines))
    return result


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    return parse(EvalConfig, argv=argv)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    result = evaluate(cfg)
    print(
        f"[eval] wrote {Path(cfg.output or Path(cfg.model) / 'eval.json')}: "
        + ", ".join(f"{m} pass@1 {r['pass@1']:.3f}" for m, r in result["modes"].items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
