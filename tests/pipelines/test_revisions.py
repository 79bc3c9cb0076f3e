"""Pinned model code: `model_revision` reaches every loader, and `trust_remote_code` needs a pinned commit."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipelines.core.config import ConfigError

SHA = "0123456789abcdef0123456789abcdef01234567"


def synth_args(tmp_path, *extra):
    from pipelines.synth import parse_args

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"question": "1 + 1?", "answer": "#### 2"}\n')
    yaml = tmp_path / "synth.yaml"
    yaml.write_text("backend: vllm\nengine_kwargs:\n  trust_remote_code: true\n")
    return parse_args(["--config", str(yaml), "--prompts_path", str(prompts), *extra])


def test_trust_remote_code_needs_a_pinned_commit(tmp_path):
    with pytest.raises(ConfigError, match="trust_remote_code runs the Python code in org/model's repository: pin it"):
        synth_args(tmp_path, "--model_name_or_path", "org/model")
    with pytest.raises(ConfigError, match="got 'main'"):  # a branch moves: not a pin
        synth_args(tmp_path, "--model_name_or_path", "org/model", "--model_revision", "main")
    assert synth_args(tmp_path, "--model_name_or_path", "org/model", "--model_revision", SHA).model_revision == SHA
    local = tmp_path / "model"
    local.mkdir()
    assert synth_args(tmp_path, "--model_name_or_path", str(local)).model_revision is None  # code already here


def test_training_stages_refuse_unpinned_remote_code(tmp_path):
    from sft.common import checkpoint_artifact
    from sft.train import parse_args

    data = tmp_path / "sft.jsonl"
    data.write_text('{"messages": []}\n')
    argv = [
        "--model_name_or_path",
        "org/model",
        "--dataset_name",
        str(data),
        "--output_dir",
        str(tmp_path / "o"),
        "--trust_remote_code",
        "true",
        "--bf16",
        "false",
    ]
    with pytest.raises(ConfigError, match="pin it with model_revision"):
        checkpoint_artifact("sft", *parse_args(argv), [str(data)])


def test_model_revision_reaches_vllm_transformers_and_tokenizers(monkeypatch):
    import transformers

    from pipelines.reasoning import backends
    from sft import common

    cfg = SimpleNamespace(
        model_name_or_path="org/model", model_revision=SHA, max_prompt_tokens=None, max_new_tokens=16, engine_kwargs={}
    )
    engine = backends.vllm_engine_kwargs(cfg)
    assert engine["revision"] == SHA and engine["tokenizer_revision"] == SHA

    calls = []

    def record(name):
        def from_pretrained(path, **kwargs):
            calls.append((name, kwargs.get("revision")))
            raise RuntimeError("stop")  # nothing is downloaded: only what the loader was asked for matters

        return from_pretrained

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record("tokenizer"))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", record("model"))
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", record("config"))
    for load in (
        lambda: backends.load_tokenizer.__wrapped__("org/model", SHA),
        lambda: common.is_hybrid("org/model", False, SHA),
    ):
        with pytest.raises(RuntimeError, match="stop"):
            load()
    monkeypatch.setattr(backends, "load_tokenizer", SimpleNamespace(__wrapped__=lambda p, r: _Tok()))
    with pytest.raises(RuntimeError, match="stop"):
        backends.TransformersGenerator("org/model", 1, None, revision=SHA)
    assert calls == [("tokenizer", SHA), ("config", SHA), ("model", SHA)]


class _Tok:
    pad_token = "<pad>"
    padding_side = "right"
