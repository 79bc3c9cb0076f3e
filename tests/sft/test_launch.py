"""Training on several ranks: `nanoforge sft --num_processes 2` (torchrun, gloo on CPU) and `--launcher ray` (Ray Train
workers) train the tiny hybrid exactly as one process does with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from pipelines.core.artifacts import read_manifest
from sft.launch import pop_launch_args, wants_fsdp
from tests.sft.test_train import conversations, gsm8k_style, sft_argv, write_jsonl

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # several processes, each loading torch + TRL


def test_launch_flags_are_taken_out_of_the_stage_arguments():
    assert pop_launch_args(["--config", "x.yaml", "--num_processes", "4", "--launcher=ray", "--seed", "1"]) == (
        4,
        "ray",
        ["--config", "x.yaml", "--seed", "1"],
    )
    assert pop_launch_args(["--seed", "1"]) == (1, "accelerate", ["--seed", "1"])
    with pytest.raises(ValueError, match="--num_processes must be a positive integer"):
        pop_launch_args(["--num_processes", "two"])
    with pytest.raises(ValueError, match="--launcher must be one of accelerate, ray"):
        pop_launch_args(["--launcher", "slurm"])


def test_fsdp_is_read_from_the_command_line_or_the_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("fsdp: true\nfsdp_config: {version: 2}\n")
    assert wants_fsdp(["--config", str(config)])
    assert not wants_fsdp(["--config", str(config), "--fsdp", "false"])  # the command line wins
    assert wants_fsdp(["--fsdp=full_shard"]) and wants_fsdp(["--fsdp"])
    assert not wants_fsdp(["--config", "sft/configs/sft_demo.yaml"]) and not wants_fsdp([])


def nanoforge_sft(argv: list[str], *launch: str) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "pipelines.cli", "sft", *argv, *launch]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def losses(out: Path) -> list[float]:
    return [row["loss"] for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in row]


@pytest.fixture(scope="module")
def one_process(tiny_base, tmp_path_factory):
    """The reference: one process, batch 8 (the whole 8-row set every step, so sample order cannot matter)."""
    tmp = tmp_path_factory.mktemp("launch")
    data = write_jsonl(tmp / "sft.jsonl", conversations(8))
    common = dict(max_steps=4, logging_steps=1, save_steps=100)
    nanoforge_sft(sft_argv(tiny_base, data, tmp / "one", per_device_train_batch_size=8, **common))
    return tmp, data, common


@pytest.mark.parametrize("launcher", ["accelerate", "ray"])
def test_two_ranks_train_as_one_process_with_the_same_global_batch(one_process, tiny_base, launcher):
    tmp, data, common = one_process
    out = tmp / launcher
    argv = sft_argv(tiny_base, data, out, per_device_train_batch_size=4, **common)
    nanoforge_sft(argv, "--num_processes", "2", "--launcher", launcher)

    # Same losses (gradients averaged over all 8 rows' tokens) and the same weights, up to float32 reduction order
    assert losses(out) == pytest.approx(losses(tmp / "one"), rel=1e-5)
    ours, ref, base = (load_file(p / "model.safetensors") for p in (out, tmp / "one", tiny_base))
    assert max((ours[k] - ref[k]).abs().max().item() for k in ref) < 1e-5
    assert max((ours[k] - base[k]).abs().max().item() for k in ref) > 1e-3  # it did train
    manifest = read_manifest(out)  # one artifact, written by rank 0 alone
    assert manifest["status"] == "complete" and manifest["counts"]["steps"] == 4
    assert not list(tmp.glob(f".{launcher}.*"))  # no partial directory or lock left behind


def test_fsdp_on_one_process_runs_in_a_process_group(one_process, tiny_base):
    """The Trainer refuses FSDP outside a process group ("Using fsdp only works in distributed training"), which is
    how a *_nano2_12b recipe runs on one GPU: one rank goes through torchrun (gloo here) and trains. Its end-of-stage
    eval then runs from inside the torchrun rank, as the recipes' did on the H200 (where vLLM hung in-process)."""
    tmp, data, common = one_process
    config = tmp / "fsdp.yaml"
    config.write_text("fsdp: true\nfsdp_config: {version: 2, state_dict_type: FULL_STATE_DICT}\n")
    out = tmp / "fsdp"
    evals = dict(math_eval_dataset=gsm8k_style(tmp / "test.jsonl"), math_eval_limit=2, math_eval_max_new_tokens=4)
    argv = sft_argv(tiny_base, data, out, per_device_train_batch_size=8, **common, **evals)
    nanoforge_sft(["--config", str(config), *argv])
    manifest = read_manifest(out)
    assert manifest["counts"]["steps"] == 4 and len(losses(out)) == 4
    assert (
        set(manifest["eval"]) == {"think", "no_think"} and json.loads((out / "eval.json").read_text())["problems"] == 2
    )
