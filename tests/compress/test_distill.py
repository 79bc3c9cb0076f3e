"""`nanoforge distill`: the loss is a forward KL with temperature and top-k; distilling the pruned tiny teacher
lowers the KL to the teacher on held-out text and wins back LM loss lost by pruning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from compress import distill, prune
from pipelines.core.artifacts import read_manifest
from pipelines.core.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_forward_kl():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    mask = torch.ones(2, 5, dtype=torch.bool)
    expected = torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="none")
    assert distill.forward_kl(s, t, mask) == pytest.approx(expected.sum(-1).mean().item(), rel=1e-5)
    assert distill.forward_kl(s, t, mask, top_k=11) == pytest.approx(distill.forward_kl(s, t, mask).item(), rel=1e-5)
    assert distill.forward_kl(t, t, mask, temperature=2.0, top_k=3).item() == pytest.approx(0.0, abs=1e-6)
    mask[:, 2:] = False  # padding positions do not count
    assert distill.forward_kl(s, t, mask) == pytest.approx(expected[:, :2].sum(-1).mean().item(), rel=1e-5)


def test_distillation_recovers_what_pruning_lost(teacher, text_rows, tmp_path):
    student = tmp_path / "student"
    flags = ["--mlp_ratio", "0.5", "--mamba_heads_ratio", "0.5", "--hidden_ratio", "0.25"]
    assert (
        prune.main(
            [
                "--model_name_or_path",
                str(teacher),
                "--calibration_dataset",
                str(text_rows),
                "--output_dir",
                str(student),
                "--calibration_samples",
                "16",
                *flags,
            ]
        )
        == 0
    )
    out = tmp_path / "distilled"
    args = f"""--model_name_or_path {student} --teacher_model_name_or_path {teacher} --dataset_name {text_rows}
        --output_dir {out} --eval_samples 32 --lmbda 0 --beta 0 --temperature 1.0 --distill_top_k 0 --max_length 64
        --dtype float32 --bf16 false --activation_checkpointing false --learning_rate 3e-3 --max_steps 25
        --per_device_train_batch_size 8 --report_to none --save_steps 100 --logging_steps 5""".split()
    assert distill.main(args) == 0
    ev = read_manifest(out)["distill_eval"]
    before, after = ev["before"], ev["after"]
    print("distill_eval", ev)
    assert after["kl_to_teacher"] < 0.7 * before["kl_to_teacher"]
    lost = before["student_loss"] - before["teacher_loss"]
    assert lost > 0.05  # pruning cost the student loss on held-out text...
    assert after["student_loss"] - after["teacher_loss"] < 0.7 * lost  # ...and distillation won most of it back
    assert (out / "model.safetensors").exists() and not list(out.glob("checkpoint-*"))


def test_only_forward_kl(tiny_base, text_rows, tmp_path):
    args = ["--model_name_or_path", str(tiny_base), "--teacher_model_name_or_path", str(tiny_base)]
    args += ["--dataset_name", str(text_rows), "--output_dir", str(tmp_path / "x"), "--beta", "0.5", "--bf16", "false"]
    with pytest.raises(ConfigError, match="forward KL"):
        distill.main(args)


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(teacher, text_rows, tmp_path):
    """As sft/train.py: a run killed after its first checkpoint continues from it; every step is logged once. 200
    steps so that the kill lands mid-run: on a quiet machine 10 tiny steps finished before the poll saw step 4."""
    out = tmp_path / "out"
    argv = f"""--model_name_or_path {teacher} --teacher_model_name_or_path {teacher} --dataset_name {text_rows}
        --output_dir {out} --eval_samples 8 --lmbda 0 --beta 0 --max_length 32 --dtype float32 --bf16 false
        --activation_checkpointing false --max_steps 200 --save_steps 4 --save_total_limit 2 --logging_steps 1
        --per_device_train_batch_size 2 --report_to none""".split()
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "compress.distill", *argv],
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
    assert read_manifest(out) is None

    assert distill.main(argv) == 0
    steps = [row["step"] for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in row]
    assert steps == list(range(1, 201))  # before the kill and after resuming, none twice
    assert read_manifest(out)["counts"]["steps"] == 200
