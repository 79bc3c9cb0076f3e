"""CUDA-graph settings per model kind (`pipelines/reasoning/vllm_graphs.py`), and that synth, eval and GRPO's colocated
rollouts all apply them: breakable graphs replayed a hybrid's Mamba prefill wrong on the H200 (10 of 44 argmax
agreeing with transformers, eager 44 of 44), so no hybrid engine may get them."""

from __future__ import annotations

import json
import logging
import os
import sys
import types

import pytest

from pipelines.reasoning import vllm_graphs
from pipelines.reasoning.vllm_graphs import BREAKABLE, HYBRID_COMPILATION, RUNNER, engine_env, hybrid_engine_kwargs

pytestmark = pytest.mark.timeout(120)


def test_a_hybrid_gets_full_decode_graphs_float32_state_and_the_users_keys_win():
    got = hybrid_engine_kwargs({"max_model_len": 1536}, max_num_seqs=1024)
    assert got == {
        "mamba_ssm_cache_dtype": "float32",
        "max_model_len": 1536,
        "compilation_config": {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY", "max_cudagraph_capture_size": 1024},
    }
    mine = hybrid_engine_kwargs(
        {"mamba_ssm_cache_dtype": "auto", "compilation_config": {"cudagraph_mode": "NONE"}}, max_num_seqs=256
    )
    assert mine["mamba_ssm_cache_dtype"] == "auto"
    assert mine["compilation_config"] == {"mode": 0, "cudagraph_mode": "NONE", "max_cudagraph_capture_size": 256}
    assert "compilation_config" not in hybrid_engine_kwargs({"enforce_eager": True})  # eager: no graphs to set


def test_engine_env_never_gives_a_hybrid_breakable_graphs_and_gives_it_the_v2_runner(monkeypatch, caplog):
    monkeypatch.delenv(BREAKABLE, raising=False)
    monkeypatch.delenv(RUNNER, raising=False)
    assert engine_env(hybrid=False) == {BREAKABLE: "1"}  # the runner is vLLM's choice for a dense model (V2)
    assert engine_env(hybrid=True) == {BREAKABLE: "0", RUNNER: "1"}
    monkeypatch.setenv(BREAKABLE, "0")  # the caller's choice for a dense model
    assert engine_env(hybrid=False) == {BREAKABLE: "0"}
    monkeypatch.setenv(BREAKABLE, "1")
    monkeypatch.delenv(RUNNER, raising=False)  # set again by the code under test; restored after
    monkeypatch.setenv(RUNNER, "0")  # the caller's choice of runner stands
    with caplog.at_level(logging.WARNING, logger=vllm_graphs.__name__):
        assert engine_env(hybrid=True) == {BREAKABLE: "0", RUNNER: "0"}
    assert f"{BREAKABLE}=1 ignored for a hybrid" in caplog.text


def test_an_in_process_hybrid_engine_turns_breakable_graphs_off_and_says_so(monkeypatch, caplog):
    monkeypatch.setenv(BREAKABLE, "1")
    monkeypatch.delenv(RUNNER, raising=False)  # set again by the code under test; restored after
    kwargs = vllm_graphs.hybrid_engine_in_this_process({"max_num_seqs": 8}, max_num_seqs=8, v2_runner=False)
    assert RUNNER not in vllm_graphs.os.environ  # GRPO's: the runner left to vLLM
    with caplog.at_level(logging.WARNING, logger=vllm_graphs.__name__):
        kwargs = vllm_graphs.hybrid_engine_in_this_process({"max_num_seqs": 8}, max_num_seqs=8)
    assert vllm_graphs.os.environ[BREAKABLE] == "0" and vllm_graphs.os.environ[RUNNER] == "1"
    assert kwargs == hybrid_engine_kwargs({"max_num_seqs": 8}, max_num_seqs=8)
    assert f"{BREAKABLE}=1 ignored for a hybrid" in caplog.text


def test_synth_engine_kwargs_and_actor_env_for_a_hybrid(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from pipelines.reasoning import backends

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "nemotron_h"}))
    cfg = SimpleNamespace(model_name_or_path=str(tmp_path), max_prompt_tokens=0, max_new_tokens=8, engine_kwargs={})
    kwargs = backends.vllm_engine_kwargs(cfg)
    assert kwargs["compilation_config"] == HYBRID_COMPILATION | {"max_cudagraph_capture_size": 1024}
    seen = {}

    class Processor(Exception):
        pass

    def build_processor(config, **_):
        seen["env"] = config.runtime_env["env_vars"]
        raise Processor

    monkeypatch.setenv(BREAKABLE, "1")
    monkeypatch.delenv(RUNNER, raising=False)  # set again by the code under test; restored after
    monkeypatch.setattr("ray.data.llm.build_processor", build_processor)
    cfg = SimpleNamespace(
        model_name_or_path=str(tmp_path),
        max_prompt_tokens=0,
        max_new_tokens=8,
        engine_kwargs={},
        num_workers=1,
        batch_size=4,
        accelerator_type=None,
    )
    with pytest.raises(Processor):
        backends.vllm(None, cfg)
    assert seen["env"] == {BREAKABLE: "0", RUNNER: "1"}


class FakeLLM:
    """Stands in for `vllm.LLM` (no vLLM on the CPU machines): records its kwargs and the breakable-graph setting it
    was built under."""

    built: list[dict] = []

    def __init__(self, **kwargs):
        FakeLLM.built.append(kwargs | {"env": vllm_graphs.os.environ.get(BREAKABLE), "runner": os.environ.get(RUNNER)})


def test_eval_builds_a_hybrids_engine_with_full_decode_graphs(tiny_base, monkeypatch):
    import torch

    from sft import evaluate

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM, SamplingParams=dict))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (80 * 2**30, 80 * 2**30))
    monkeypatch.setenv(BREAKABLE, "1")
    monkeypatch.delenv(RUNNER, raising=False)  # set again by the code under test; restored after
    FakeLLM.built.clear()
    evaluate.vllm_generator(evaluate.EvalConfig(model=str(tiny_base), vllm_engine_kwargs={"max_num_seqs": 8}))
    (built,) = FakeLLM.built
    assert built["compilation_config"] == HYBRID_COMPILATION | {"max_cudagraph_capture_size": 8}
    assert built["mamba_ssm_cache_dtype"] == "float32" and built["max_num_seqs"] == 8
    assert built["enable_prefix_caching"] is False and built["env"] == "0" and built["runner"] == "1"


def test_grpo_colocated_rollouts_of_a_hybrid_get_full_decode_graphs(tiny_base, monkeypatch):
    import trl.generation.vllm_generation as vg
    from trl import ModelConfig

    from rl.grpo import GRPOScriptArgs, colocated_engine_kwargs

    monkeypatch.setattr(vg, "LLM", FakeLLM, raising=False)  # set only where vLLM is installed
    monkeypatch.setenv(BREAKABLE, "1")
    monkeypatch.delenv(RUNNER, raising=False)  # set again by the code under test; restored after
    FakeLLM.built.clear()
    colocated_engine_kwargs(GRPOScriptArgs(), ModelConfig(model_name_or_path=str(tiny_base)))
    vg.LLM(model="m")  # as TRL builds it
    (built,) = FakeLLM.built
    assert built["compilation_config"] == HYBRID_COMPILATION and built["mamba_ssm_cache_dtype"] == "float32"
    assert built["env"] == "0" and built["runner"] is None  # TRL's weight swaps untried on V2: vLLM's choice (V1)
