"""`nanoforge merge`: alpha 0 and 1 give the inputs bit for bit, 0.5 their average; mismatched models fail."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from pipelines.core.artifacts import read_manifest
from pipelines.core.config import ConfigError
from rl import merge


@pytest.fixture(scope="module")
def two_models(tiny_base, tmp_path_factory):
    """The tiny base and a copy with every weight moved by noise (same architecture), both in bf16."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = tmp_path_factory.mktemp("merge")
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.bfloat16)
    model.save_pretrained(tmp / "w1")
    tokenizer.save_pretrained(tmp / "w1")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p.dtype) * 0.1)
    model.save_pretrained(tmp / "w2")
    tokenizer.save_pretrained(tmp / "w2")
    return tmp / "w1", tmp / "w2"


def merged(w1, w2, alpha, out):
    assert merge.main(["--models", str(w1), str(w2), "--alpha", str(alpha), "--output_dir", str(out)]) == 0
    return load_file(out / "model.safetensors")


def test_alpha_ends_reproduce_inputs_exactly_and_half_is_the_average(two_models, tmp_path):
    w1, w2 = two_models
    a, b = load_file(w1 / "model.safetensors"), load_file(w2 / "model.safetensors")
    at0, at1, half = (merged(w1, w2, alpha, tmp_path / f"m{alpha}") for alpha in (0.0, 1.0, 0.5))
    for name in a:
        assert torch.equal(at0[name], a[name]) and torch.equal(at1[name], b[name]), name
        assert half[name].dtype == torch.bfloat16
        expected = ((a[name].float() + b[name].float()) / 2).to(torch.bfloat16)
        torch.testing.assert_close(half[name], expected, atol=0, rtol=2**-7)  # one bf16 rounding at most
    manifest = read_manifest(tmp_path / "m0.5")
    assert manifest["counts"]["tensors"] == len(a) and len(manifest["inputs"]) == 2
    assert (tmp_path / "m0.5" / "chat_template.jinja").exists() and (tmp_path / "m0.5" / "config.json").exists()


def test_models_with_different_tensors_are_refused(two_models, tmp_path):
    w1, w2 = two_models
    odd = tmp_path / "odd"
    odd.mkdir()
    tensors = load_file(w2 / "model.safetensors")
    tensors.pop(next(iter(tensors)))
    from safetensors.torch import save_file

    save_file(tensors, odd / "model.safetensors")
    with pytest.raises(ConfigError, match="different tensors"):
        merge.main(["--models", str(w1), str(odd), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(ConfigError, match="exactly two"):
        merge.main(["--models", str(w1), "--output_dir", str(tmp_path / "out")])


@pytest.mark.parametrize("name", ["../escape.safetensors", "/tmp/abs.safetensors", "sub/../../escape.safetensors"])
def test_weight_map_file_names_leaving_the_checkpoint_are_refused(tmp_path, name):
    """A crafted index must not make merge read or write outside the checkpoint folders (out/<file>)."""
    import json

    from safetensors.torch import save_file

    models = []
    for k in (1, 2):
        m = tmp_path / "models" / f"w{k}"
        m.mkdir(parents=True)
        (m / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {"a": name}}))
        models.append(m)
    save_file({"a": torch.zeros(2)}, tmp_path / "models" / "escape.safetensors")  # what '../' would reach
    out = tmp_path / "out" / "merged"
    out.mkdir(parents=True)
    with pytest.raises(ConfigError, match="weight-map file name must be relative"):
        merge.merge(models[0], models[1], 0.5, out)
    assert not (tmp_path / "out" / "escape.safetensors").exists()
