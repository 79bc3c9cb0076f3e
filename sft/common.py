"""What `sft/train.py`, `rl/dpo.py` and `rl/grpo.py` share, so that a diff between the three stages shows only
their real differences: the dataset and eval fields, reading a dataset from the Hub or a local artifact, model
loading kwargs, the LoRA default for hybrid models, the packing check, the metrics file, resuming, and writing
the final checkpoint artifact (safetensors only, LoRA merged, eval.json when a math eval set is configured).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from pipelines.core.artifacts import Artifact
from pipelines.core.config import ConfigError, check_pinned, to_dict
from pipelines.core.datasets import looks_local, source_id
from sft import attention

attention.register()  # attn_implementation "varlen", in every process that loads a model through these stages
# The mamba-ssm Triton kernels autotune in the first training step of every process (65-107 s for the 1B hybrid on
# an H200, benchmarks/RESULTS.md); with this, the results go to Triton's cache dir and later runs, resumes and
# stages read them. Set before the kernels are imported (their decorators read it); a user's own setting wins.
os.environ.setdefault("TRITON_CACHE_AUTOTUNING", "1")

# Nemotron-H names its Mamba-2 input projection in_proj; PEFT has no default target list for the architecture, and
# LoRA on attention alone would leave the mixing layers (~90% of Nano 2) frozen. The Mamba out_proj is left out on
# purpose: the fused Mamba kernel (GPU) reads `out_proj.weight` directly, bypassing the adapter, so PEFT refuses it.
HYBRID_LORA_TARGETS = ["in_proj", "q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]


@dataclass
class ScriptArgs:
    """Dataset, evaluation and rerun fields shared by the sft, dpo and grpo stages (TRL's names where TRL has one)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset id, a local JSONL/Parquet file, or a local artifact directory (e.g. the "
            "`sft`, `preference` or `rl_prompts` folder written by `nanoforge select`)."
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Dataset config name (an artifact's card lists its configs, e.g. `rejected`)."}
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on (Hub datasets)."})
    math_eval_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Math set evaluated with `nanoforge eval` at the end of training (GSM8K-style JSONL, "
            "MATH-style JSONL or a prompts artifact); results go to eval.json in the checkpoint."
        },
    )
    math_eval_limit: int | None = field(default=50, metadata={"help": "Problems evaluated (first N); null = all."})
    math_eval_num_samples: int = field(default=1, metadata={"help": "Samples per problem; pass@1 is their mean."})
    math_eval_max_new_tokens: int = field(default=256, metadata={"help": "Token budget per eval completion."})
    force: bool = field(default=False, metadata={"help": "Retrain even if an identical checkpoint exists."})
    fp32_residual: bool = field(
        default=False,
        metadata={
            "help": "Keep the residual stream in float32 under bf16 autocast. Off (Megatron's default): the "
            "embedding output is cast to bf16, so residual adds and norm inputs run in bf16 while weights and "
            "optimizer state stay float32 (the 1B hybrid: 32% -> 40% MFU on an H200, same loss)."
        },
    )


def model_init_kwargs(training_args, model_args) -> dict[str, Any]:
    """TRL's model kwargs. TRL's `ModelConfig.dtype` defaults to float32, so a model loads in float32 unless the
    config says `dtype: bfloat16` (the 12B configs do) or `auto` (the checkpoint's dtype)."""
    attn = model_args.attn_implementation
    if attn is None and (getattr(training_args, "padding_free", False) or getattr(training_args, "packing", False)):
        attn = attention.NAME  # packed rows: one varlen flash call per layer, not SDPA with a block-diagonal mask
    kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": attn,
        "dtype": model_args.dtype or "auto",
        # Training never reads a KV/Mamba cache; building one makes NemotronH skip its fused Mamba kernel
        # (62.5k vs 50.3k tokens/s and 35 vs 56 GiB on the 1B hybrid, ../shared/gpu/README.md).
        "use_cache": False,
    }
    return kwargs | dict(training_args.model_init_kwargs or {})


def is_hybrid(model_name_or_path: str, trust_remote_code: bool = False, revision: str | None = None) -> bool:
    """Whether the model mixes Mamba (or other recurrent) layers with attention."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    layer_kinds = getattr(config, "layers_block_type", None) or getattr(config, "layer_types", None) or []
    pattern = getattr(config, "hybrid_override_pattern", "") or ""
    return "M" in pattern or any(k in ("mamba", "linear_attention") for k in layer_kinds)


def peft_config(model_args, trust_remote_code: bool = False):
    """TRL's LoRA config; on hybrid models the default targets include the Mamba in_proj (see HYBRID_LORA_TARGETS)."""
    from trl import get_peft_config

    if model_args.use_peft and model_args.lora_target_modules is None:
        hybrid = is_hybrid(model_args.model_name_or_path, trust_remote_code, model_args.model_revision)
        model_args.lora_target_modules = list(HYBRID_LORA_TARGETS) if hybrid else "all-linear"
    return get_peft_config(model_args)


def packing_leak(model, atol: float | None = None) -> str | None:
    """Why samples packed into one row would see each other in `model`, or None when they stay apart.

    Runs two random samples alone and packed the way TRL's padding-free collator packs them (position_ids,
    seq_idx, cu_seq_lens) and compares the second sample's log-probs. Mamba layers keep samples apart only with
    the mamba_ssm/causal_conv1d kernels (GPU); attention only with a varlen kernel (flash_attention_2/3).
    """
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    if torch.cuda.is_available() and next(model.parameters()).device.type != "cuda":
        model = architecture_probe(model, "cuda")  # FSDP keeps the weights on the CPU (or meta) until it shards
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    atol = atol if atol is not None else (1e-3 if dtype == torch.float32 else 5e-2)
    vocab = model.get_input_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(0)
    first, second = (torch.randint(10, vocab, (n,), generator=g).tolist() for n in (13, 11))
    packed = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(
        [{"input_ids": first}, {"input_ids": second}]
    )
    packed.pop("labels")
    was_training = model.training
    try:
        # Both modes: NemotronH takes its fused Mamba kernel only in training, another code path than inference.
        # (A model with dropout would differ in train mode anyway; the hybrid and Llama configs have none.)
        for training in (False, True):
            model.train(training)
            with torch.no_grad():
                # use_cache=False as in training: with a cache NemotronH takes a path that ignores seq_idx
                ids = torch.tensor([second], device=device)
                alone = model(input_ids=ids, use_cache=False).logits.float().log_softmax(-1)[0]
                inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in packed.items()}
                together = model(**inputs, use_cache=False).logits.float().log_softmax(-1)[0]
            diff = (together[len(first) :] - alone).abs().max().item()
            if diff > atol:
                mode = "training" if training else "inference"
                return (
                    f"the second packed sample's log-probs differ by up to {diff:.3g} from the sample run alone "
                    f"({mode} mode)"
                )
    except (ValueError, RuntimeError, TypeError) as e:
        return f"the model refuses packed input ({e})"
    finally:
        model.train(was_training)
    return None


def architecture_probe(model, device: str):
    """A random copy of `model`'s architecture on `device` with one layer of each kind and a small vocabulary: what
    keeps packed samples apart is the code path (Mamba kernels, attention implementation), not the weights."""
    import torch

    config = model.config.to_dict()
    key = next((k for k in ("layers_block_type", "layer_types") if isinstance(config.get(k), list)), None)
    if key:
        config[key] = list(dict.fromkeys(config[key]))
        config["num_hidden_layers"] = len(config[key])
        config.pop("hybrid_override_pattern", None)
    else:
        config["num_hidden_layers"] = min(config.get("num_hidden_layers", 2), 2)
    config["vocab_size"] = min(config.get("vocab_size", 4096), 4096)
    small = type(model.config).from_dict(config)
    small._attn_implementation = model.config._attn_implementation
    dtype = next(model.parameters()).dtype
    with torch.device(device):
        return type(model)._from_config(small, dtype=dtype).eval()


def prepare_trainer(trainer, script_args) -> None:
    """What every training stage does to a built trainer before training: refuse leaky packing, and give the
    decoder a bf16 residual stream under bf16 autocast unless `fp32_residual`."""
    refuse_leaky_packing(trainer)
    if not script_args.fp32_residual:
        embeddings = trainer.accelerator.unwrap_model(trainer.model).get_input_embeddings()
        embeddings.register_forward_hook(residual_in_autocast_dtype)


def residual_in_autocast_dtype(module, args, output):
    """Forward hook on the input embeddings. With float32 master weights the embedding's output is float32, and
    autocast leaves adds and norms alone: every residual add, norm and cast in the decoder then moves float32
    (a third of the hybrid's GPU time on an H200). Under autocast the stream starts in the autocast dtype instead;
    outside autocast (float32 training, bf16 weights) nothing changes."""
    import torch

    kind = output.device.type
    if output.is_floating_point() and torch.is_autocast_enabled(kind):
        return output.to(torch.get_autocast_dtype(kind))
    return output


def refuse_leaky_packing(trainer) -> None:
    """Stop before training when padding-free/packed rows would leak state between samples (see packing_leak)."""
    if getattr(trainer.args, "packing", False) and trainer.args.packing_strategy == "wrapped":
        raise ConfigError(
            "packing_strategy: wrapped concatenates samples with no boundary at all, so every sample sees the one "
            "before it; use packing_strategy: bfd (where the packing check passes) or packing: false"
        )
    if not getattr(trainer, "padding_free", False) and not getattr(trainer.args, "padding_free", False):
        return
    why = packing_leak(trainer.accelerator.unwrap_model(trainer.model))
    if why:
        raise ConfigError(
            f"packing/padding_free would let samples leak into each other on this model: {why}. Mamba layers keep "
            "packed samples apart only with the mamba_ssm and causal_conv1d kernels (GPU), attention only with "
            "attn_implementation flash_attention_2/3. Set packing: false and padding_free: false."
        )


class MetricsFile(TrainerCallback):
    """Appends every log (loss, lr, rewards...) as one JSON line to `<output_dir>/metrics.jsonl`.

    On resume, lines past the checkpoint's step are dropped first, so a step is never logged twice.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.path.exists():
            kept = [
                line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= state.global_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


def check_inputs(script_args, training_args, model_args) -> None:
    """Fail before any model loads or step runs when a local input the stage needs later is missing: the model,
    the training set, the evaluation set read after the last step, the chat template. Hub ids are not checked
    (no network at this point); a path that looks local and does not exist is an error naming it."""
    named = [
        ("model_name_or_path", model_args.model_name_or_path),
        ("dataset_name", script_args.dataset_name),
        ("math_eval_dataset", script_args.math_eval_dataset),
        ("chat_template_path", getattr(training_args, "chat_template_path", None)),
    ]
    for field_name, value in named:
        if value and (looks_local(value) or value.endswith(".jinja")) and not Path(value).exists():
            raise ConfigError(
                f"{field_name}: not found: {value} (checked before training; fix the path in the config)"
            )
    trust = training_args.trust_remote_code or getattr(model_args, "trust_remote_code", False)
    check_pinned(model_args.model_name_or_path, model_args.model_revision, trust)


def checkpoint_artifact(stage: str, script_args, training_args, model_args, inputs: list[str]) -> Artifact:
    if not model_args.model_name_or_path:
        raise ConfigError("model_name_or_path is required (a checkpoint folder or a Hub model id)")
    check_inputs(script_args, training_args, model_args)
    return Artifact(
        training_args.output_dir,
        kind="checkpoint",
        stage=stage,
        config=to_dict(script_args, training_args, model_args),
        inputs=[source_id(i) for i in inputs if i],
    )


@contextlib.contextmanager
def checkpoint_writing(art: Artifact) -> Iterator[Path]:
    """`art.writing()` on the main process only; under `accelerate launch` every rank trains into the same
    partial directory, which exists before any rank starts. The other ranks leave once their share of the final
    save is done (its collectives are the last ones); the main process then runs the end-of-stage eval and commits
    alone. A barrier there would hold every other rank for the whole eval and fail the job once the eval outlasts
    the collective timeout (`ddp_timeout`, 30 minutes by default)."""
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        with art.writing() as tmp:
            state.wait_for_everyone()
            yield tmp
    else:
        state.wait_for_everyone()
        yield art.partial


# What torchrun / accelerate tell a rank about its process group; the eval's process must not see them.
DISTRIBUTED_ENV = frozenset(
    "RANK LOCAL_RANK WORLD_SIZE LOCAL_WORLD_SIZE GROUP_RANK GROUP_WORLD_SIZE ROLE_RANK ROLE_NAME ROLE_WORLD_SIZE "
    "MASTER_ADDR MASTER_PORT TORCH_NCCL_ASYNC_ERROR_HANDLING".split()
)


class EvalFailed(RuntimeError):
    """The end-of-stage eval exited with an error; the message holds the command that reruns it."""


def eval_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The eval process's environment: the trainer's, less its process group, with `sft` importable."""
    env = {k: v for k, v in environ.items() if k not in DISTRIBUTED_ENV and not k.startswith("TORCHELASTIC_")}
    root = str(Path(__file__).resolve().parents[1])  # the checkout (or site-packages) that holds `sft`
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def end_of_stage_eval(model: Path, script_args, bf16: bool = False) -> dict:
    """`nanoforge eval` of the saved checkpoint in a process of its own, outside the trainer's process group: the
    vLLM engine it starts hung joining torchrun's rendezvous (sft, dpo) and aborted the process in CUDA-graph
    capture beside GRPO's colocated engine (H200, 2026-12-02). Returns eval.json, or raises `EvalFailed` with the
    command that reruns it."""
    args = ["--model", str(model), "--dataset", str(script_args.math_eval_dataset)]
    args += ["--num_samples", str(script_args.math_eval_num_samples)]
    args += ["--max_new_tokens", str(script_args.math_eval_max_new_tokens)]
    if script_args.math_eval_limit is not None:
        args += ["--limit", str(script_args.math_eval_limit)]
    if bf16:  # the model was trained under bf16 matmuls; its float32 master weights are evaluated the same way
        args += ["--dtype", "bfloat16"]
    cmd = [sys.executable, "-m", "pipelines.cli", "eval", *args]  # the CLI: a bad eval file is one clear line
    env = eval_environment(os.environ)
    with contextlib.suppress(ImportError):  # the trainer's cached blocks are free for the eval's engine
        import torch

        torch.cuda.empty_cache()
    print(f"[eval] nanoforge eval {shlex.join(args)}", flush=True)
    done = subprocess.run(cmd, env=env, check=False)
    if done.returncode != 0:
        rerun = f"nanoforge eval {shlex.join(args)}"
        raise EvalFailed(f"the end-of-stage eval failed (exit {done.returncode}); rerun it with: {rerun}")
    return json.loads((model / "eval.json").read_text())


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete `checkpoint-N` folder left by an interrupted run in the partial directory, if any.

    The Trainer writes `trainer_state.json` last, so a folder without a readable one was torn by a kill during the
    save: it is renamed `torn-checkpoint-N` (out of the Trainer's sight, removed with the other leftovers at the
    end) and the next newest is used."""
    folder = Path(output_dir)
    found = sorted(
        (p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()),
        key=lambda p: int(p.name.split("-", 1)[1]),
        reverse=True,
    )
    for checkpoint in found:
        try:
            json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
        except (OSError, ValueError, KeyError) as e:
            aside = checkpoint.with_name(f"torn-{checkpoint.name}")
            shutil.rmtree(aside, ignore_errors=True)
            checkpoint.rename(aside)
            print(
                f"[resume] {checkpoint} is incomplete (a save was interrupted: {type(e).__name__}); set "
                f"aside as {aside}"
            )
            continue
        print(f"[resume] continuing from {checkpoint}")
        return str(checkpoint)
    return None


def save_checkpoint(trainer, tmp: Path, art: Artifact, script_args, num_rows: int) -> None:
    """Write the trained model (LoRA merged), tokenizer and counts into `tmp`; run the math eval if configured."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):  # PEFT: the next stage loads a plain checkpoint
        if trainer.accelerator.is_main_process:
            model.merge_and_unload().save_pretrained(tmp)
            trainer.processing_class.save_pretrained(tmp)
    else:
        trainer.save_model(str(tmp))
    if not trainer.accelerator.is_main_process:
        return
    # Optimizer/RNG pickles and TRL's model card: the artifact is safetensors + config, its card comes from the
    # manifest
    for leftover in [
        *tmp.glob("checkpoint-*"),
        *tmp.glob("torn-checkpoint-*"),
        tmp / "training_args.bin",
        tmp / "README.md",
    ]:
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink(missing_ok=True)
    trainer.state.save_to_json(str(tmp / "trainer_state.json"))  # the log history: the run report's training curves
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    art.counts = {"train_rows": num_rows, "steps": trainer.state.global_step}
    art.extra["final_loss"] = losses[-1] if losses else None
    if script_args.math_eval_dataset:
        # The trained model is the costly product: an eval that fails (an engine out of memory, a broken eval file)
        # is recorded in the manifest and the checkpoint is committed; the message says how to evaluate it later
        try:
            result = end_of_stage_eval(tmp, script_args, bf16=bool(trainer.args.bf16))
            art.extra["eval"] = {mode: r["pass@1"] for mode, r in result["modes"].items()}
        except EvalFailed as e:
            message = str(e).replace(str(tmp), str(art.path))  # the command names where the checkpoint will be
            art.extra["eval_error"] = message
            print(f"[eval] WARNING: {message}. The checkpoint is kept without eval.json.", flush=True)
    if trainer.args.push_to_hub:
        trainer.push_to_hub()
