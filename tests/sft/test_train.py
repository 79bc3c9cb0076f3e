"""`nanoforge sft` on the tiny hybrid base: the model moves, only assistant tokens are trained, LoRA reaches the
Mamba projections, packing is refused where packed samples leak into each other, and a killed run resumes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from artifact_factory import write_parquet
from safetensors.torch import load_file

from pipelines.core.artifacts import read_manifest
from pipelines.core.config import ConfigError
from pipelines.core.run_report import write_run_report
from sft import train
from sft.common import architecture_probe, last_checkpoint, packing_leak

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def conversations(n: int, seed: int = 0) -> list[dict]:
    """Addition dialogues in the traces format: 3/4 reason (`<think>...</think>answer`), 1/4 `/no_think`."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 30), rng.randint(1, 30)
        if i % 4 == 3:
            user, answer = f"What is {a} plus {b}? /no_think", f"The answer is {a + b}."
        else:
            user, answer = (
                f"What is {a} plus {b}?",
                f"<think>\n{a} plus {b} is {a + b}.\n</think>The answer is {a + b}.",
            )
        rows.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def gsm8k_style(path: Path, n: int = 4) -> Path:
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(n)]
    return write_jsonl(path, rows)


def sft_argv(base: Path, data: Path, out: Path, **overrides) -> list[str]:
    args = (
        dict(
            model_name_or_path=base,
            dataset_name=data,
            output_dir=out,
            assistant_only_loss=True,
            max_length=256,
            dtype="float32",
            bf16=False,
            activation_checkpointing=False,
            learning_rate=3e-3,
            max_steps=40,
            per_device_train_batch_size=8,
            logging_steps=5,
            save_steps=20,
            report_to="none",
            disable_tqdm=True,
            seed=0,
        )
        | overrides
    )
    return [x for k, v in args.items() for x in (f"--{k}", str(v))]


@pytest.fixture(scope="module")
def sft_run(tiny_base, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sft")
    data = write_jsonl(tmp / "sft.jsonl", conversations(48))
    evalset = gsm8k_style(tmp / "test.jsonl")
    argv = sft_argv(
        tiny_base, data, tmp / "out", math_eval_dataset=evalset, math_eval_limit=4, math_eval_max_new_tokens=8
    )
    assert train.main(argv) == 0
    return tmp / "out", argv


def test_sft_lowers_loss_and_changes_every_kind_of_layer(sft_run, tiny_base):
    out, _ = sft_run
    losses = [
        row["loss"] for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in row
    ]
    assert len(losses) == 8 and losses[-1] < 0.7 * losses[0], losses
    before, after = load_file(tiny_base / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    for part in ("embeddings", "mixer.in_proj", "mixer.out_proj", "mixer.q_proj", "mixer.up_proj", "lm_head"):
        changed = [name for name in before if part in name and not torch.equal(before[name], after[name])]
        assert changed, f"no {part} tensor changed"


def test_sft_checkpoint_is_a_complete_safetensors_artifact_with_eval(sft_run, capsys):
    out, argv = sft_run
    manifest = read_manifest(out)
    assert manifest["kind"] == "checkpoint" and manifest["counts"] == {"train_rows": 48, "steps": 40}
    assert set(manifest["eval"]) == {"think", "no_think"}  # the stage ran `eval` on the finished model
    assert json.loads((out / "eval.json").read_text())["problems"] == 4
    assert not list(out.glob("checkpoint-*")) and not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    assert (out / "chat_template.jinja").exists()  # the next stage renders prompts the same way
    assert train.main(argv) == 0  # same config and inputs: nothing to do
    assert "is up to date" in capsys.readouterr().out


def test_only_assistant_tokens_carry_loss(tiny_base, tmp_path):
    messages = [
        {"role": "system", "content": "You add numbers."},
        {"role": "user", "content": "What is 2 plus 3?"},
        {"role": "assistant", "content": "<think>\n2 plus 3 is 5.\n</think>The answer is 5."},
        {"role": "user", "content": "And 4 plus 4? /no_think"},
        {"role": "assistant", "content": "The answer is 8."},
    ]
    data = write_jsonl(tmp_path / "one.jsonl", [{"messages": messages}])
    trainer = train.build_trainer(*train.parse_args(sft_argv(tiny_base, data, tmp_path / "out")), tmp_path / "out")
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    spans, current = [], []
    for token, label in zip(ids, labels, strict=True):
        if label != -100:
            current.append(token)
        elif current:
            spans, current = [*spans, trainer.processing_class.decode(current)], []
    # Exactly the assistant turns plus their end of turn: an earlier turn keeps its answer only (as at inference),
    # the `<think></think>` the template puts before a no-reasoning answer is prompt, not target.
    assert spans == ["The answer is 5.<SPECIAL_12>", "The answer is 8.<SPECIAL_12>"]


def test_lora_default_targets_reach_mamba_and_are_merged(tiny_base, tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", conversations(16))
    argv = sft_argv(
        tiny_base,
        data,
        tmp_path / "lora",
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
        max_steps=3,
        learning_rate=1e-2,
        logging_steps=1,
    )
    assert train.main(argv) == 0
    before, after = load_file(tiny_base / "model.safetensors"), load_file(tmp_path / "lora" / "model.safetensors")
    assert before.keys() == after.keys()  # merged: a plain checkpoint, no adapter tensors
    changed = {name.split(".")[-2] for name in before if not torch.equal(before[name], after[name])}
    assert {"in_proj", "q_proj", "up_proj"} <= changed
    assert "out_proj" not in changed  # the fused Mamba kernel reads out_proj.weight directly: PEFT refuses it
    assert "embeddings" not in changed and "lm_head" not in changed  # frozen under LoRA


def test_packed_samples_leak_on_cpu_and_packing_is_refused(tiny_base, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(1)
    first, second = torch.randint(10, 500, (1, 20), generator=g), torch.randint(10, 500, (1, 16), generator=g)

    def per_token_nll(logits, ids):
        return torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none")

    with torch.no_grad():
        alone = [per_token_nll(model(input_ids=x).logits, x) for x in (first, second)]
        # Packed the way padding-free packing feeds a model: one row, positions restarting at each sample. Without
        # the varlen kernels nothing tells the Mamba scan (or SDPA) where the second sample starts.
        positions = torch.cat([torch.arange(20), torch.arange(16)])[None]
        logits = model(input_ids=torch.cat([first, second], 1), position_ids=positions).logits
    packed_first = per_token_nll(logits[:, :20], first)
    packed_second = per_token_nll(logits[:, 20:], second)
    torch.testing.assert_close(packed_first, alone[0])  # causal: the first sample cannot see the second
    assert (packed_second - alone[1]).abs().max() > 1e-2  # but the second sees the first: state leaked

    assert packing_leak(model) is not None  # the check the stages run reaches the same verdict
    data = write_jsonl(tmp_path / "sft.jsonl", conversations(8))
    with pytest.raises(ConfigError, match="leak into each other"):
        train.main(sft_argv(tiny_base, data, tmp_path / "packed", packing=True, max_steps=1))
    with pytest.raises(ConfigError, match="no boundary"):  # wrapped packing has no sample boundaries at all
        train.main(sft_argv(tiny_base, data, tmp_path / "wrapped", packing=True, packing_strategy="wrapped"))


def test_the_packing_check_runs_on_a_small_copy_of_the_architecture_when_the_weights_wait_on_the_cpu(tiny_base):
    """Under FSDP the weights stay on the CPU (or meta) until training starts; the check then runs a random copy with
    one layer of each kind and a small vocabulary on the GPU: the same code path, so the same verdict."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    model.config.layers_block_type = model.config.layers_block_type * 2  # a deeper stack of the same kinds
    probe = architecture_probe(model, "cpu")
    assert type(probe) is type(model) and probe.config.vocab_size <= 4096
    assert probe.config.layers_block_type == list(dict.fromkeys(model.config.layers_block_type))
    assert probe.config._attn_implementation == model.config._attn_implementation
    assert packing_leak(probe) is not None  # on the CPU (no kernels) the copy leaks as the model does


def test_dataset_name_reads_an_artifact_folder_but_not_its_rejected_rows(tmp_path):
    from pipelines.core.artifacts import Artifact
    from pipelines.core.datasets import load_split

    art = Artifact(tmp_path / "select", kind="selection", stage="select", config={})
    rows = conversations(6)
    with art.writing() as tmp:
        sub = Artifact(tmp / "sft", kind="sft", stage="select", config={})
        with sub.writing() as sft_tmp:
            write_parquet(sft_tmp / "shard-0.parquet", rows[:4])
            write_parquet(sft_tmp / "shard-1.parquet", rows[4:])
            write_parquet(sft_tmp / "rejected" / "r.parquet", [{"id": "x", "reason": "unverified"}])
    # The card written at commit lists the kept rows as the default config; `rejected` is a config of its own.
    for loaded in (load_split(str(art.path / "sft")), load_split(str(art.path), config="sft")):
        assert len(loaded) == 6 and loaded[0]["messages"] == rows[0]["messages"]
    assert load_split(str(art.path / "sft"), config="rejected")["reason"] == ["unverified"]
    with pytest.raises(ConfigError, match="dataset not found"):
        load_split(str(tmp_path / "nowhere" / "sft"))


def test_artifacts_with_the_same_name_in_different_runs_load_their_own_rows(tmp_path):
    """`datasets` caches a folder by its name and its card's relative patterns: runs/a/sft and runs/b/sft must not
    share an entry (a demo rerun trained on 6 stale rows of another run instead of its 400)."""
    from pipelines.core.artifacts import Artifact
    from pipelines.core.datasets import load_split

    for run, n in (("a", 3), ("b", 5)):
        art = Artifact(tmp_path / run / "sft", kind="sft", stage="select", config={"run": run})
        with art.writing() as tmp:
            write_parquet(tmp / "shard-0.parquet", conversations(n, seed=n))
    assert len(load_split(str(tmp_path / "a" / "sft"))) == 3
    assert len(load_split(str(tmp_path / "b" / "sft"))) == 5
    with pytest.raises(ConfigError, match="no config 'nope'; its card lists default"):
        load_split(str(tmp_path / "a" / "sft"), config="nope")


@pytest.mark.gpu
def test_packing_keeps_samples_apart_with_mamba_kernels(tiny_base):
    """With the kernels, TRL's padding-free batches (position_ids resets + seq_idx) keep samples apart: attention
    through the block-diagonal mask transformers builds from position_ids (sdpa), Mamba through seq_idx."""
    pytest.importorskip("mamba_ssm")
    pytest.importorskip("causal_conv1d")
    from transformers import AutoModelForCausalLM

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.bfloat16, attn_implementation="sdpa").cuda()
    assert packing_leak(model) is None  # inference and training (fused mamba_split_conv1d_scan_combined) paths
    on_cpu = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32, attn_implementation="sdpa")
    assert (
        packing_leak(on_cpu) is None
    )  # weights on the CPU, as FSDP holds them before sharding: a GPU copy is checked


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(tiny_base, tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", conversations(32))
    out = tmp_path / "out"
    argv = sft_argv(
        tiny_base, data, out, max_steps=60, save_steps=4, save_total_limit=2, logging_steps=1
    )  # mid-run kill
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sft.train", *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = tmp_path / ".out.partial"
    deadline = time.monotonic() + 300
    while not (partial / "checkpoint-4" / "trainer_state.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before its first checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # a crash: no cleanup, no manifest
    proc.wait()
    assert not out.exists() and read_manifest(out) is None
    torn = partial / "checkpoint-100"  # a kill during a save: weights half written, no trainer_state.json
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"\0" * 100)

    assert train.main(argv) == 0
    steps = [row["step"] for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in row]
    assert steps == list(range(1, 61))  # steps before the kill and after resuming, none twice
    assert read_manifest(out)["counts"]["steps"] == 60
    assert not list(out.glob("*checkpoint-*"))  # the torn checkpoint went with the other leftovers


def test_resume_skips_a_torn_checkpoint_and_sets_it_aside(tmp_path, capsys):
    """The Trainer writes trainer_state.json last: a folder without a readable one was torn by a kill mid-save."""
    for step, state in ((4, '{"global_step": 4}'), (8, None), (12, '{"global_st')):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"weights")
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "torn-checkpoint-12", "torn-checkpoint-8"]
    out = capsys.readouterr().out
    assert "checkpoint-12 is incomplete" in out and "set aside as" in out and "continuing from" in out
    assert last_checkpoint(tmp_path / "nothing-here") is None


def test_missing_eval_set_or_dataset_fails_before_training(tmp_path):
    """The evaluation set is read after the last step; a wrong path used to cost the whole run (issue 13 item 15)."""
    base = tmp_path / "base"
    base.mkdir()  # never loaded: the check comes first
    data = write_jsonl(tmp_path / "sft.jsonl", conversations(4))
    missing = tmp_path / "runs" / "demo_data" / "math" / "test.jsonl"
    argv = sft_argv(base, data, tmp_path / "out", math_eval_dataset=missing)
    with pytest.raises(ConfigError, match=f"math_eval_dataset: not found: {missing}"):
        train.main(argv)
    with pytest.raises(ConfigError, match="dataset_name: not found: .*nope.jsonl"):
        train.main(sft_argv(base, tmp_path / "nope.jsonl", tmp_path / "out"))
    with pytest.raises(ConfigError, match="chat_template_path: not found"):
        train.main(sft_argv(base, data, tmp_path / "out", chat_template_path=tmp_path / "t.jinja"))
    assert not (tmp_path / ".out.partial").exists() and not (tmp_path / "out").exists()


def test_a_broken_dataset_row_is_an_error_naming_file_and_line(tmp_path):
    from pipelines.core.datasets import load_split

    path = tmp_path / "sft.jsonl"
    path.write_text(
        json.dumps(conversations(1)[0]) + "\n" + '{"messages": [{"role": "user", "content": "x\\ud83d"}]}\n'
    )
    with pytest.raises(ConfigError, match=f"{path}:2: a lone surrogate"):
        load_split(str(path))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fp32_residual", [False, True])
def test_residual_stream_is_bf16_under_autocast_unless_fp32_residual(tiny_base, tmp_path, fp32_residual):
    data = write_jsonl(tmp_path / "sft.jsonl", conversations(8))
    argv = sft_argv(tiny_base, data, tmp_path / "out", max_steps=1, fp32_residual=fp32_residual)
    script_args, training_args, model_args = train.parse_args(argv)
    model = train.build_trainer(script_args, training_args, model_args, tmp_path / "out").model
    seen = []
    model.model.layers[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    model(input_ids=ids)  # outside autocast the stream stays float32 either way
    assert seen == [torch.float32 if fp32_residual else torch.bfloat16, torch.float32]
    grad = model.get_input_embeddings().weight.grad
    assert grad.dtype == torch.float32 and grad.abs().sum() > 0  # float32 master weights still learn through it


def test_the_end_of_stage_eval_runs_outside_the_trainers_process_group():
    """The eval starts vLLM in a process of its own: torchrun's rank and rendezvous variables stay behind (vLLM
    hung joining them), the rest of the environment and an importable `sft` go with it."""
    from sft.common import eval_environment

    trainer_env = {"RANK": "0", "WORLD_SIZE": "8", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    trainer_env |= {"TORCHELASTIC_RUN_ID": "x", "CUDA_VISIBLE_DEVICES": "0,1", "HF_HOME": "/hf", "PYTHONPATH": "/mine"}
    env = eval_environment(trainer_env)
    assert env.keys() == {"CUDA_VISIBLE_DEVICES", "HF_HOME", "PYTHONPATH"}
    root = str(Path(__file__).resolve().parents[2])
    assert env["PYTHONPATH"] == f"{root}:/mine" and env["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_an_eval_that_fails_keeps_the_trained_checkpoint(tiny_base, tmp_path, capsys):
    """The eval runs after training: a broken eval file (found only when the eval reads it) is recorded in the
    manifest with the command that reruns the eval, and the checkpoint is committed, not lost."""
    data = write_jsonl(tmp_path / "sft.jsonl", conversations(16))
    evalset = gsm8k_style(tmp_path / "test.jsonl")
    evalset.write_text(evalset.read_text() + "{not json\n")
    out = tmp_path / "out"
    assert train.main(sft_argv(tiny_base, data, out, max_steps=2, math_eval_dataset=evalset)) == 0
    manifest = read_manifest(out)
    assert manifest["status"] == "complete" and manifest["counts"]["steps"] == 2 and "eval" not in manifest
    assert "end-of-stage eval failed (exit" in manifest["eval_error"]
    assert f"rerun it with: nanoforge eval --model {out} --dataset {evalset}" in manifest["eval_error"]
    assert (out / "model.safetensors").is_file() and not (out / "eval.json").exists()
    assert "The checkpoint is kept without eval.json" in capsys.readouterr().out
    html = write_run_report(tmp_path, [("sft", str(out), "done")]).read_text()
    assert "<b>Eval failed</b>: the end-of-stage eval failed" in html  # the run's report says so too
