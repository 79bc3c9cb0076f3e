"""init-base: the tiny checkpoint loads with the Auto classes, trains, generates, and is a lineage artifact."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipelines.core.artifacts import read_manifest
from pipelines.core.config import ConfigError
from sft.init_base import PRESETS, build_base, main


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_base):
    # No trust_remote_code: NemotronH is a transformers architecture.
    return AutoModelForCausalLM.from_pretrained(tiny_base), AutoTokenizer.from_pretrained(tiny_base)


def chat_batch(tokenizer, n=2):
    convs = [
        [
            {"role": "user", "content": f"What is {i} + {i}?"},
            {"role": "assistant", "content": f"<think></think>{2 * i}"},
        ]
        for i in range(n)
    ]
    return tokenizer.apply_chat_template(convs, padding=True, return_tensors="pt", return_dict=True)


def test_checkpoint_is_a_hybrid_nemotron_h(tiny_base, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    assert type(model).__name__ == "NemotronHForCausalLM"
    # Mamba-2 ("linear_attention"), attention and MLP layers, in that Nemotron-H pattern.
    assert {"linear_attention", "full_attention", "mlp"} <= set(model.config.layer_types)
    assert any(type(layer.mixer).__name__ == "NemotronHMamba2Mixer" for layer in model.model.layers)
    assert model.config.vocab_size == len(tokenizer)
    # Decoding generations with skip_special_tokens keeps the reasoning delimiters the verifier parses.
    ids = tokenizer("<think>\n2 + 2</think>4<SPECIAL_12>")["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>\n2 + 2</think>4"
    assert model.generation_config.eos_token_id[0] == tokenizer.convert_tokens_to_ids("<SPECIAL_12>")
    assert not list(tiny_base.glob("*.bin")), "weights must be safetensors only"
    manifest = read_manifest(tiny_base)
    assert manifest["kind"] == "checkpoint" and manifest["stage"] == "init-base"
    assert manifest["counts"]["parameters"] == sum(p.numel() for p in model.parameters())


def test_forward_backward_reaches_every_layer_kind_and_training_lowers_loss(tiny_base):
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    batch = chat_batch(tokenizer)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loss = model(**batch, labels=labels).loss
    loss.backward()
    for kind, name in [("mamba", "mixer.in_proj"), ("attention", "mixer.q_proj"), ("mlp", "mixer.up_proj")]:
        grads = [p.grad for n, p in model.named_parameters() if name in n]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), f"no gradient in {kind} layers"

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        out = model(**batch, labels=labels)
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters() if p.requires_grad)


def test_generate_matches_a_full_forward(model_and_tokenizer):
    """Greedy generation (Mamba recurrent state + KV cache) picks the same tokens as re-running the whole sequence."""
    model, tokenizer = model_and_tokenizer
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Ana has 3 apples."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    n = prompt["input_ids"].shape[1]
    out = model.generate(**prompt, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert out.shape[1] == n + 6
    with torch.no_grad():
        logits = model(input_ids=out[:, :-1]).logits
    assert torch.equal(logits[0, n - 1 :].argmax(-1), out[0, n:])


def test_rerun_is_skipped_force_rebuilds_and_seed_matters(tmp_path, capsys):
    out = tmp_path / "base"
    argv = ["--output_dir", str(out), "--preset", "tiny", "--seed", "1"]
    assert main(argv) == 0
    weights = (out / "model.safetensors").read_bytes()
    inode = (out / "model.safetensors").stat().st_ino

    main(argv)
    assert "up to date" in capsys.readouterr().out
    assert (out / "model.safetensors").stat().st_ino == inode  # untouched

    main([*argv, "--force"])
    assert (out / "model.safetensors").stat().st_ino != inode  # a new file, moved into place
    assert (out / "model.safetensors").read_bytes() == weights  # same seed, same weights

    main(["--output_dir", str(out), "--preset", "tiny", "--seed", "2"])  # a changed config reruns
    assert read_manifest(out)["config"]["seed"] == 2
    assert (out / "model.safetensors").read_bytes() != weights


def test_tokenizer_trains_on_corpus_paths_and_counts_unusable_rows(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = ['{"text": "zebra quagga okapi zebra quagga okapi"}'] * 19 + ["not json", '{"id": 7}', '{"text": 3}', "[1]"]
    (corpus / "part-0.jsonl").write_text("\n".join(rows) + "\n")
    (corpus / "math.jsonl").write_text('{"question": "What is 2 + 2?", "answer": "2 + 2 = 4\\n#### 4"}\n')
    out = build_base(tmp_path / "base", corpus_paths=[str(corpus)])
    counts = read_manifest(out)["counts"]
    assert counts["corpus_rows"] == 19 + 1 and counts["corpus_rows_skipped"] == 4
    assert counts["corpus_files"] == 2
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer.tokenize(" zebra quagga okapi")) == 3  # words of that corpus became single tokens
    assert read_manifest(out)["inputs"][0]["path"] == str(corpus)


def test_bad_preset_and_missing_corpus_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        build_base(tmp_path / "x", preset="huge")
    with pytest.raises(ConfigError, match="nowhere"):
        build_base(tmp_path / "y", corpus_paths=[str(tmp_path / "nowhere")])


def test_small_preset_size(tmp_path):
    out = build_base(tmp_path / "small", preset="small")
    n = read_manifest(out)["counts"]["parameters"]
    assert 20e6 <= n <= 50e6, n
    assert json.loads((out / "config.json").read_text())["hidden_size"] == PRESETS["small"]["hidden_size"]
