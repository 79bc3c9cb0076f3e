"""Shape arithmetic: exact parameter counts, the published Nano 2 / Nemotron-H sizes, and 128k tokens on 22 GiB."""

from __future__ import annotations

import pytest

from compress.shapes import NANO2_9B, NANO2_12B, NEMOTRON_H_56B, fits, num_parameters, pattern, serving_memory


def test_parameter_count_is_exact_on_a_real_model(tiny_base):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    assert num_parameters(model.config) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "shape, billions, kinds",
    [
        (NANO2_12B, 12.31, (28, 28, 6)),  # published: 12.31B
        (NANO2_9B, 8.89, (27, 25, 4)),  # published: 8.89B
        (NEMOTRON_H_56B, 56.32, (54, 54, 10)),  # published: "56B", 54 Mamba-2, 54 MLP, 10 attention
    ],
)
def test_published_shapes(shape, billions, kinds):
    assert num_parameters(shape) / 1e9 == pytest.approx(billions, abs=0.01)
    p = pattern(shape)
    assert (p.count("M"), p.count("-"), p.count("*")) == kinds


def test_128k_tokens_fit_a_22_gib_a10g_after_pruning_only():
    """Nano 2's goal: the 9B serves 128k tokens in bf16 on an A10G (22 GiB); the 12B's weights alone do not fit."""
    nine, twelve = serving_memory(NANO2_9B, seq_len=131072), serving_memory(NANO2_12B, seq_len=131072)
    assert nine["weights_gib"] == pytest.approx(16.56, abs=0.01)
    assert nine["kv_cache_gib"] == pytest.approx(2.0)  # 4 attention layers x 2 x 8 kv heads x 128 x 128k x 2 bytes
    assert nine["mamba_state_gib"] < 0.2  # constant in the sequence length
    assert fits(NANO2_9B, budget_gib=22.0, headroom_gib=2.0)
    assert twelve["weights_gib"] > 22.0 and not fits(NANO2_12B, budget_gib=22.0, headroom_gib=0.0)


def test_nano2_preset_targets_give_the_9b_shapes():
    """prune_nano2_12b_to_9b.yaml applied to the 12B's config gives the 9B's sizes (and, with its pattern, its
    count)."""
    from pathlib import Path

    from transformers import NemotronHConfig

    from compress.prune import parse_args
    from compress.slicing import target_shape

    yaml = Path(__file__).resolve().parents[2] / "compress" / "configs" / "prune_nano2_12b_to_9b.yaml"
    cfg = parse_args(["--config", str(yaml)])
    config = NemotronHConfig(**NANO2_12B)
    shape = target_shape(cfg, config)
    assert shape == {
        "hidden_size": 4480,
        "intermediate_size": 15680,
        "n_groups": 8,
        "mamba_num_heads": 128,
        "num_attention_heads": 40,
        "num_layers": 56,
    }
    pruned = NANO2_12B | {k: v for k, v in shape.items() if k != "num_layers"}
    pruned["hybrid_override_pattern"] = NANO2_9B["hybrid_override_pattern"]
    assert num_parameters(pruned) == num_parameters(NANO2_9B)
