"""`nanoforge prune`: ratio 0 is the identity; a pruned model has the requested shapes, loads, generates, and its
manifest says what was removed; zero-importance channels are exactly what goes; a parameter target is met."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from compress import prune
from compress.shapes import num_parameters
from pipelines.core.artifacts import read_manifest
from pipelines.core.config import ConfigError


def run(model, data, out, *flags) -> dict:
    args = ["--model_name_or_path", str(model), "--calibration_dataset", str(data), "--output_dir", str(out)]
    assert prune.main([*args, "--calibration_samples", "16", "--calibration_max_length", "64", *flags]) == 0
    return read_manifest(out)


def logits(path, ids):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


IDS = torch.tensor([[7, 42, 99, 3, 250, 17, 64, 8, 120, 33]])


def test_ratio_zero_is_the_identity(teacher, text_rows, tmp_path):
    manifest = run(teacher, text_rows, tmp_path / "same")
    assert manifest["parameters"]["before"] == manifest["parameters"]["after"]
    assert manifest["removed_layers"] == []
    assert torch.equal(logits(teacher, IDS), logits(tmp_path / "same", IDS))


def test_pruned_model_has_the_requested_shapes_loads_and_generates(teacher, text_rows, tmp_path):
    out = tmp_path / "small"
    flags = ["--hidden_ratio", "0.25", "--mlp_ratio", "0.5", "--mamba_heads_ratio", "0.25"]
    manifest = run(teacher, text_rows, out, *flags, "--attention_heads_ratio", "0.5", "--num_layers", "3")
    model = AutoModelForCausalLM.from_pretrained(out)
    c = model.config
    assert (c.hidden_size, c.intermediate_size, c.mamba_num_heads, c.num_attention_heads) == (48, 64, 6, 2)
    assert len(c.layers_block_type) == 3 and num_parameters(c) == sum(p.numel() for p in model.parameters())
    assert model.model.layers[0].mixer.in_proj.weight.shape == (2 * 6 * 16 + 2 * 16 + 6, 48)  # z, x, B, C, dt
    tokenizer = AutoTokenizer.from_pretrained(out)
    generated = model.generate(**tokenizer("12 + 30 =", return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > 0
    # the manifest: one layer removed (the one whose absence costs least loss, the attention layer excepted: at least
    # one is kept), the scores kept beside the weights
    (removed,) = manifest["removed_layers"]
    record = json.loads((out / "pruning.json").read_text())
    depth = record["scores"]["depth"]["loss_increase"]
    assert (
        removed["loss_increase"] == min(d for i, d in enumerate(depth) if i != 1)
        and removed["kind"] != "full_attention"
    )
    assert "full_attention" in c.layers_block_type
    assert manifest["parameters"]["after"] == num_parameters(c) < manifest["parameters"]["before"]
    assert manifest["calibration_loss"]["after"] > manifest["calibration_loss"]["before"] - 1e-6
    assert len(record["scores"]["width"]["hidden"]) == 64 and len(record["keep"]["hidden"]) == 48


def test_channels_without_activation_are_the_ones_removed(teacher, text_rows, tmp_path):
    """Half of the MLP's channels get zero up_proj rows (relu2(0) = 0): mlp_ratio 0.5 removes exactly those, and the
    outputs do not change at all."""
    model = AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32)
    with torch.no_grad():
        model.model.layers[3].mixer.up_proj.weight[1::2] = 0
    model.save_pretrained(tmp_path / "dead")
    AutoTokenizer.from_pretrained(teacher).save_pretrained(tmp_path / "dead")
    run(tmp_path / "dead", text_rows, tmp_path / "pruned", "--mlp_ratio", "0.5")
    record = json.loads((tmp_path / "pruned" / "pruning.json").read_text())
    assert record["keep"]["mlp"]["3"] == list(range(0, 128, 2))
    assert torch.allclose(logits(tmp_path / "dead", IDS), logits(tmp_path / "pruned", IDS), atol=1e-5)


def test_target_parameter_count(teacher, text_rows, tmp_path):
    manifest = run(teacher, text_rows, tmp_path / "target", "--target_params", "120000")
    assert 110000 < manifest["parameters"]["after"] <= 120000
    assert manifest["shape"]["after"]["num_layers"] == 4  # width only: hidden and MLP shrink together


def test_impossible_shapes_fail_clearly(teacher, text_rows, tmp_path):
    with pytest.raises(ConfigError, match="num_attention_heads 3 must be a multiple of num_key_value_heads 2"):
        run(teacher, text_rows, tmp_path / "bad", "--num_attention_heads", "3")


def test_a_bf16_checkpoint_stays_bf16(teacher, text_rows, tmp_path):
    """Scoring runs in float32 (`dtype`); the pruned checkpoint is written in the input's own dtype."""
    model = AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    AutoTokenizer.from_pretrained(teacher).save_pretrained(tmp_path / "bf16")
    run(tmp_path / "bf16", text_rows, tmp_path / "pruned", "--mlp_ratio", "0.5")
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned", dtype="auto")
    assert {p.dtype for p in pruned.parameters()} == {torch.bfloat16}


def test_a_silent_mamba_group_is_removed_exactly(teacher, text_rows, tmp_path):
    """Two Mamba groups of 4 heads; group 1's gated-norm weights are zero, so it adds nothing: removing it
    (mamba_groups_ratio 0.5) keeps heads 0-3 and B/C of group 0, and the outputs do not change. The gated norm
    normalizes per group, so the other group is untouched."""
    from transformers import AutoConfig, NemotronHForCausalLM

    config = AutoConfig.from_pretrained(teacher)
    config.n_groups = 2
    torch.manual_seed(0)
    model = NemotronHForCausalLM(config)
    with torch.no_grad():
        for i in (0, 2):  # the Mamba layers of M*M-
            model.model.layers[i].mixer.norm.weight[64:] = 0  # group 1 = heads 4-7 = channels 64-127
    model.save_pretrained(tmp_path / "groups")
    AutoTokenizer.from_pretrained(teacher).save_pretrained(tmp_path / "groups")
    run(tmp_path / "groups", text_rows, tmp_path / "pruned", "--mamba_groups_ratio", "0.5")
    record = json.loads((tmp_path / "pruned" / "pruning.json").read_text())
    assert record["keep"]["mamba_groups"]["0"] == [0] and record["keep"]["mamba_heads"]["2"] == [0, 1, 2, 3]
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned")
    assert (pruned.config.n_groups, pruned.config.mamba_num_heads) == (1, 4)
    assert torch.allclose(logits(tmp_path / "groups", IDS), logits(tmp_path / "pruned", IDS), atol=1e-5)
