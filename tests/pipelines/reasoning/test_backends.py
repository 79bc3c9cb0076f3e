"""synth's model backends end to end: transformers with the tiny NemotronH base, openai against a local HTTP server.

Length (~500 lines): every backend's tests sit together, as the backends do in one module (`backends.py`), with the
local HTTP server and the fake-engine runs they share.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datapaths import shared_data

from pipelines.core.artifacts import read_manifest
from pipelines.core.config import ConfigError
from pipelines.reasoning.prompt_formats import assistant_content
from pipelines.synth import parse_args, synthesize

pytestmark = pytest.mark.slow  # a Ray actor pool / HTTP workers: tens of seconds on 2 cores


def gsm8k_prompts(tmp_path, n, extra=()):
    rows = [json.loads(line) for line in shared_data("gsm8k", "test.jsonl").read_text().splitlines()[:n]]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, *extra]))
    return path, rows


def test_transformers_backend_with_tiny_base(ray_local, tiny_base, tmp_path):
    long = {"question": "How many apples are there in all of these baskets? " * 60, "answer": "#### 3"}
    prompts, _ = gsm8k_prompts(tmp_path, 3, [long])
    argv = [
        "--prompts_path",
        str(prompts),
        "--backend",
        "transformers",
        "--model_name_or_path",
        str(tiny_base),
        "--num_samples",
        "2",
        "--reasoning",
        "mixed",
        "--think_ratio",
        "0.5",
        "--max_new_tokens",
        "8",
        "--max_prompt_tokens",
        "200",
        "--batch_size",
        "4",
        "--output_dir",
        str(tmp_path / "traces"),
    ]
    out = synthesize(parse_args(argv))
    counts = read_manifest(out)["counts"]
    traces = pq.read_table(out / "traces").to_pylist()
    assert len(traces) == counts["samples"] == 8  # 4 prompts x 2 samples, failures included
    failed = [t for t in traces if t["error"]]
    assert len(failed) == counts["errors"] == 2 and all("prompt too long" in t["error"] for t in failed)
    assert all(t["verified"] is None and t["messages"][-1]["role"] == "user" for t in failed)
    assert set(counts["reasoning"]) == {"on", "off"}  # the mixed ratio gave both modes
    for t in traces:
        system = t["messages"][0]["content"]
        assert system == {"on": "/think", "off": "/no_think"}[t["reasoning"]]
        assert t["sampling_params"]["temperature"] == (0.6 if t["reasoning"] == "on" else 0.0)
        assert t["generator"] == {"model": str(tiny_base), "revision": None, "backend": "transformers"}
        if t["error"]:
            continue
        content = t["messages"][-1]["content"]
        assert 1 <= t["num_generated_tokens"] <= 8 and (not t["truncated"] or t["num_generated_tokens"] == 8)
        assert content.startswith("<think></think>" if t["reasoning"] == "off" else "<think>\n")
        assert t["verified"] is False  # a random model does not solve GSM8K; the answer was checked, not skipped

    # The greedy (/no_think) rows equal a plain generate() on the same prompt: batching and padding change nothing.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    for t in [t for t in traces if t["reasoning"] == "off" and not t["error"]]:
        text = tok.apply_chat_template(t["messages"][:-1], add_generation_prompt=True, tokenize=False)
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
        ids = model.generate(**enc, max_new_tokens=8, do_sample=False)[0, enc["input_ids"].shape[1] :]
        eos = model.generation_config.eos_token_id
        stop = next(
            (j for j, i in enumerate(ids.tolist()) if i in (eos if isinstance(eos, list) else [eos])), len(ids)
        )
        expected = tok.decode(ids[:stop], skip_special_tokens=True)
        assert t["messages"][-1]["content"] == assistant_content(expected, "off")


def test_more_model_actors_than_a_local_ray_can_place_is_an_error_not_a_hang(ray_local, tiny_base, tmp_path):
    prompts, _ = gsm8k_prompts(tmp_path, 2)
    argv = ["--prompts_path", str(prompts), "--backend", "transformers", "--model_name_or_path", str(tiny_base)]
    argv += ["--num_workers", "3", "--output_dir", str(tmp_path / "traces")]  # 3 actors x 1 CPU > 2 CPUs
    started = time.monotonic()
    with pytest.raises(ConfigError, match="num_workers x num_cpus_per_worker: 3 x 1 CPUs .* than the 2 CPUs"):
        synthesize(parse_args(argv))
    assert time.monotonic() - started < 60 and not (tmp_path / "traces").exists()


@pytest.mark.timeout(120)
def test_model_actors_holding_every_cpu_still_get_their_prompts(ray_local, tiny_base, tmp_path):
    """Prompts stream in while the model actors run: the reader and the trace writer reserve no CPU, so one actor
    with both CPUs of the local Ray is fed (a reader waiting for a free CPU would wait forever)."""
    prompts, _ = gsm8k_prompts(tmp_path, 3)
    argv = ["--prompts_path", str(prompts), "--backend", "transformers", "--model_name_or_path", str(tiny_base)]
    argv += ["--num_cpus_per_worker", "2", "--num_samples", "1", "--max_new_tokens", "2"]
    out = synthesize(parse_args([*argv, "--output_dir", str(tmp_path / "traces")]))
    assert read_manifest(out)["counts"]["samples"] == 3


class ChatServer(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible /v1/chat/completions server; what it answers depends on the question."""

    plan: dict[str, tuple[str, str]] = {}  # question -> (behaviour, gold)
    requests: list[dict] = []
    lock = threading.Lock()
    open_requests = most_open_requests = 0

    def do_POST(self):  # noqa: N802 (http.server's naming)
        with ChatServer.lock:
            ChatServer.open_requests += 1
            ChatServer.most_open_requests = max(ChatServer.most_open_requests, ChatServer.open_requests)
        try:
            self.answer()
        finally:
            with ChatServer.lock:
                ChatServer.open_requests -= 1

    def answer(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ChatServer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        behaviour, gold = self.plan[body["messages"][-1]["content"]]
        if behaviour == "paced":  # a busy server: a right answer after a moment
            time.sleep(0.5)
            behaviour = "correct"
        message, finish, status = {"role": "assistant"}, "stop", 200
        if behaviour == "correct":  # the template prefilled "<think>\n": the reply starts inside the thinking
            message["content"] = f"Add the numbers up.\n</think>\n\nThe answer is \\boxed{{{gold}}}."
        elif behaviour == "wrong":
            message["content"] = f"Guess.\n</think>\n\nThe answer is \\boxed{{{int(gold) + 1}}}."
        elif behaviour == "split":  # vllm serve --reasoning-parser returns the thinking separately
            message |= {"reasoning_content": "Work it out.", "content": f"So it is {gold}."}
        elif behaviour == "length":
            message["content"], finish = "Let me think about this for a very long", "length"
        if behaviour == "slow":  # answers after the client's request_timeout_s
            time.sleep(3)
        if behaviour == "broken":  # a proxy in front of the model failing: 502 with an HTML body, not JSON
            data = b"<html>502 Bad Gateway</html>"
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if behaviour == "error":
            status, payload = 400, {"error": {"message": "maximum context length exceeded", "type": "BadRequest"}}
        else:
            payload = {
                "id": "c",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
            }
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_openai_backend_against_local_server(ray_local, chat_server, tmp_path, monkeypatch):
    prompts, rows = gsm8k_prompts(tmp_path, 5)
    behaviours = ["correct", "wrong", "split", "length", "error"]
    ChatServer.plan = {
        r["question"]: (b, r["answer"].split("####")[-1].strip()) for r, b in zip(rows, behaviours, strict=True)
    }
    ChatServer.requests = []
    monkeypatch.setenv("NANOFORGE_TEST_KEY", "sk-local")
    argv = [
        "--prompts_path",
        str(prompts),
        "--backend",
        "openai",
        "--model_name_or_path",
        "served-model",
        "--api_base",
        chat_server,
        "--api_key_env",
        "NANOFORGE_TEST_KEY",
        "--num_samples",
        "2",
        "--reasoning",
        "on",
        "--max_new_tokens",
        "64",
        "--output_dir",
        str(tmp_path / "traces"),
    ]
    out = synthesize(parse_args(argv))
    traces = {t["id"]: t for t in pq.read_table(out / "traces").to_pylist()}
    assert len(traces) == 10 and len(ChatServer.requests) == 10  # one request per sample (no n > 1)
    for request in ChatServer.requests:
        assert request["path"] == "/v1/chat/completions" and request["model"] == "served-model"
        assert request["auth"] == "Bearer sk-local"
        assert request["max_tokens"] == 64 and request["temperature"] == 0.6 and request["top_p"] == 0.95
        assert request["messages"][0] == {"role": "system", "content": "/think"}
    assert len({r["seed"] for r in ChatServer.requests}) == 10  # each sample has its own seed
    by_behaviour = {}
    for t in traces.values():
        by_behaviour.setdefault(ChatServer.plan[t["messages"][1]["content"]][0], []).append(t)
    for t in by_behaviour["correct"] + by_behaviour["split"]:
        assert t["verified"] is True and t["messages"][-1]["content"].startswith("<think>\n")
        assert "</think>" in t["messages"][-1]["content"] and t["num_generated_tokens"] == 7
    assert all(t["verified"] is False and not t["truncated"] for t in by_behaviour["wrong"])
    assert all(t["truncated"] and t["verified"] is False for t in by_behaviour["length"])
    assert all(t["error"] == "endpoint: maximum context length exceeded" for t in by_behaviour["error"])
    counts = read_manifest(out)["counts"]
    assert counts["errors"] == 2 and counts["truncated"] == 2
    assert counts["verified"] == {"true": 4, "false": 4, "null": 2}


@pytest.mark.timeout(120)
def test_every_endpoint_worker_gets_requests(ray_local, chat_server, tmp_path):
    """Two workers of `batch_size` requests each: 8 requests at the server at once. One prompts file is one Ray
    Data block, and a block is one task for one actor: before the rows were cut into blocks of `batch_size`, the
    second worker sat idle and the server never saw more than 4."""
    prompts, rows = gsm8k_prompts(tmp_path, 32)
    ChatServer.plan = {r["question"]: ("paced", r["answer"].split("####")[-1].strip()) for r in rows}
    ChatServer.requests, ChatServer.most_open_requests = [], 0
    argv = ["--prompts_path", str(prompts), "--backend", "openai", "--model_name_or_path", "served-model"]
    argv += ["--api_base", chat_server, "--num_samples", "1", "--batch_size", "4", "--num_workers", "2"]
    out = synthesize(parse_args([*argv, "--output_dir", str(tmp_path / "traces")]))
    assert read_manifest(out)["counts"]["verified"] == {"true": 32, "false": 0, "null": 0}
    assert ChatServer.most_open_requests == 8


def test_vllm_engine_defaults_are_vllm_llms_and_a_hybrid_keeps_every_batch_size_in_a_cuda_graph(tmp_path):
    from types import SimpleNamespace

    from pipelines.reasoning.backends import vllm_engine_kwargs

    hybrid, dense = tmp_path / "hybrid", tmp_path / "dense"
    for path, model_type in ((hybrid, "nemotron_h"), (dense, "llama")):
        path.mkdir()
        (path / "config.json").write_text(json.dumps({"model_type": model_type}))

    def cfg(model, **engine):
        return SimpleNamespace(
            model_name_or_path=str(model), max_prompt_tokens=1024, max_new_tokens=512, engine_kwargs=engine
        )

    assert vllm_engine_kwargs(cfg(hybrid)) == {
        "max_model_len": 1536,
        "mamba_ssm_cache_dtype": "float32",
        "max_num_seqs": 1024,
        "max_num_batched_tokens": 16384,
        # decode-only steps in full graphs, the rest eager (pipelines/reasoning/vllm_graphs.py says why)
        "compilation_config": {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY", "max_cudagraph_capture_size": 1024},
    }
    # the YAML wins; eager mode has no graphs to size
    assert vllm_engine_kwargs(cfg(hybrid, max_num_seqs=256, enforce_eager=True))["max_num_seqs"] == 256
    assert "compilation_config" not in vllm_engine_kwargs(cfg(hybrid, enforce_eager=True))
    # vllm.LLM's batch defaults on a big GPU, not those of the server context ray.data.llm's engine runs in
    offline = {"max_num_seqs": 1024, "max_num_batched_tokens": 16384}
    assert vllm_engine_kwargs(cfg(dense)) == {"max_model_len": 1536, **offline}
    assert vllm_engine_kwargs(cfg(dense, max_num_batched_tokens=4096))["max_num_batched_tokens"] == 4096


@pytest.mark.timeout(120)
def test_the_vllm_stage_takes_the_engines_own_text(ray_local, tiny_base):
    """vLLM returns each completion's text with its tokens (raw vLLM's text comes from the same detokenizer):
    ray.data.llm's detokenize stage would decode every generated token again, in one more actor between the engine
    and the writer. The stage's plan: chat template and tokenize actors before the engine, none after it."""
    from types import SimpleNamespace

    import ray

    from pipelines.reasoning.backends import vllm

    cfg = SimpleNamespace(
        model_name_or_path=str(tiny_base), max_prompt_tokens=None, max_new_tokens=16, engine_kwargs={},
        batch_size=8, num_workers=1, accelerator_type=None, model_revision=None,
    )  # fmt: skip
    op, names = vllm(ray.data.from_items([{"id": 0}]), cfg)._logical_plan.dag, []
    while op is not None:
        names.append(op.name)
        op = op.input_dependencies[0] if op.input_dependencies else None
    udfs = [n for n in reversed(names) if n.endswith("UDF)")]
    assert udfs == [
        "MapBatches(ChatTemplateUDF)",
        "MapBatches(TokenizeUDF)",
        "MapBatches(FinalOnlyvLLMEngineStageUDF)",
    ]


def test_enough_batches_in_flight_to_keep_the_engine_full():
    from pipelines.reasoning.backends import max_concurrent_batches

    assert max_concurrent_batches({}, 16) == 128  # 2 x 1,024 (vllm.LLM's max_num_seqs) / 16
    assert max_concurrent_batches({"max_num_seqs": 1024}, 64) == 32
    assert max_concurrent_batches({"max_num_seqs": 64}, 64) == 8  # never below ray.data.llm's default


@pytest.mark.timeout(60)
def test_vllm_engine_actors_ask_vllm_for_final_outputs_only(tiny_base, monkeypatch):
    """ray.data.llm leaves vLLM's CUMULATIVE outputs (a RequestOutput per running request per step, on the actor's
    event loop); the stage's engine UDF asks for FINAL_ONLY on every request it sends, and changes nothing else."""
    import asyncio
    import enum
    import types

    from ray.data.llm import build_processor, vLLMEngineProcessorConfig
    from ray.llm._internal.batch.stages.vllm_engine_stage import vLLMEngineStage, vLLMEngineStageUDF

    from pipelines.reasoning.backends import final_outputs_only

    kinds = enum.Enum("RequestOutputKind", "CUMULATIVE DELTA FINAL_ONLY")  # vLLM's is a plain Enum too
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", types.SimpleNamespace(RequestOutputKind=kinds))
    config = vLLMEngineProcessorConfig(model_source=str(tiny_base), engine_kwargs={"max_model_len": 64})
    processor = build_processor(config)
    final_outputs_only(processor)
    udf = next(s.fn for s in processor.stages.values() if isinstance(s, vLLMEngineStage))
    assert issubclass(udf, vLLMEngineStageUDF) and udf.__name__ == "FinalOnlyvLLMEngineStageUDF"

    sent = []

    class AsyncLLM:  # what the wrapper's `engine` is; its generate is an async generator
        async def generate(self, *, request_id, prompt, sampling_params, lora_request=None):
            sent.append((request_id, prompt, sampling_params.output_kind, sampling_params.max_tokens))
            yield "finished output"

    def fake_init(self, *args, **kwargs):  # the real one starts vLLM; the subclass's __init__ runs on top of it
        self.llm = types.SimpleNamespace(engine=AsyncLLM(), shutdown=lambda: None)

    monkeypatch.setattr(vLLMEngineStageUDF, "__init__", fake_init)
    actor = udf()
    params = types.SimpleNamespace(output_kind=kinds.CUMULATIVE, max_tokens=7)

    async def consume():
        stream = actor.llm.engine.generate(request_id="3", prompt="p", sampling_params=params, lora_request=None)
        return [out async for out in stream]

    assert asyncio.run(consume()) == ["finished output"]
    assert sent == [("3", "p", kinds.FINAL_ONLY, 7)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("parallel", [{}, {"tensor_parallel_size": 2}])
def test_a_single_gpu_engine_forks_its_engine_core_in_the_actor(tiny_base, monkeypatch, parallel):
    """vLLM spawns its EngineCore from any Ray actor (a fresh import of torch and vLLM, 17 s on the H200); the engine
    stage lets a one-GPU engine (ray.data.llm's `uni` executor, no placement group) fork it while it starts, and
    leaves vLLM's check as it was afterwards. A tensor-parallel engine (Ray executor, placement group) still spawns.
    The stand-in `system_utils` decides as vLLM 0.26's `get_mp_context` does (`_maybe_force_spawn`)."""
    import types

    from ray.data.llm import build_processor, vLLMEngineProcessorConfig
    from ray.llm._internal.batch.stages.vllm_engine_stage import vLLMEngineStage, vLLMEngineStageUDF

    from pipelines.reasoning.backends import final_outputs_only

    system_utils = types.SimpleNamespace(is_in_ray_actor=lambda: True)
    system_utils.get_mp_context = lambda: "spawn" if system_utils.is_in_ray_actor() else "fork"
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.setitem(sys.modules, "vllm.utils", types.SimpleNamespace(system_utils=system_utils))
    monkeypatch.setitem(sys.modules, "vllm.utils.system_utils", system_utils)
    config = vLLMEngineProcessorConfig(model_source=str(tiny_base), engine_kwargs={"max_model_len": 64, **parallel})
    processor = build_processor(config)
    final_outputs_only(processor)
    stage = next(s for s in processor.stages.values() if isinstance(s, vLLMEngineStage))

    started = []

    def fake_init(self, *args, engine_kwargs, **kwargs):  # the real one builds AsyncLLM, which starts the EngineCore
        started.append((engine_kwargs["distributed_executor_backend"], system_utils.get_mp_context()))
        self.llm = types.SimpleNamespace(engine=None, shutdown=lambda: None)

    monkeypatch.setattr(vLLMEngineStageUDF, "__init__", fake_init)
    stage.fn(**stage.fn_constructor_kwargs)
    assert started == ([("ray", "spawn")] if parallel else [("uni", "fork")])
    assert system_utils.get_mp_context() == "spawn"  # vLLM's check is back once the engine has started


def test_the_engine_actors_get_the_callers_process_start_method_and_model_runner(tiny_base, tmp_path, monkeypatch):
    """A user who wants vLLM's spawn back sets VLLM_WORKER_MULTIPROC_METHOD=spawn where they submit, and one who wants
    vLLM's V1 model runner back on a hybrid sets VLLM_USE_V2_MODEL_RUNNER=0; Ray workers on a cluster do not inherit
    that environment, so the stage passes both on to the engine actors. A hybrid gets V2 where the caller says
    nothing; a dense model gets no runner setting (vLLM picks V2 for it)."""
    from pipelines.reasoning.backends import engine_actor_env
    from pipelines.reasoning.vllm_graphs import BREAKABLE

    for name in (BREAKABLE, "VLLM_WORKER_MULTIPROC_METHOD", "VLLM_USE_V2_MODEL_RUNNER"):
        monkeypatch.delenv(name, raising=False)
    v2 = {BREAKABLE: "0", "VLLM_USE_V2_MODEL_RUNNER": "1"}
    assert engine_actor_env(str(tiny_base)) == v2  # the tiny base is a Nemotron-H
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    assert engine_actor_env(str(tiny_base)) == v2 | {"VLLM_WORKER_MULTIPROC_METHOD": "spawn"}
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "0")
    assert engine_actor_env(str(tiny_base))["VLLM_USE_V2_MODEL_RUNNER"] == "0"
    monkeypatch.delenv("VLLM_USE_V2_MODEL_RUNNER")
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    assert engine_actor_env(str(tmp_path)) == {BREAKABLE: "1", "VLLM_WORKER_MULTIPROC_METHOD": "spawn"}


DRIVER_IMPORTS = """
import sys
from pipelines.reasoning.backends import import_in_background
if sys.argv[1] == "vllm-first":
    import vllm
import_in_background("vllm").join()
from ray.data.llm import build_processor, vLLMEngineProcessorConfig
from ray.llm._internal.batch.stages import vllm_engine_stage
from ray.llm._internal.common import errors
loaded = "vllm" in sys.modules
import vllm.v1.engine.exceptions  # importable again once the stage's modules are in
print(loaded, [e.__name__ for e in errors.VLLM_FATAL_ERRORS + errors.VLLM_CLIENT_ERRORS])
"""


@pytest.mark.timeout(90)
def test_building_the_vllm_stage_does_not_import_vllm_in_the_driver(tmp_path):
    """ray.data.llm's engine stage module pulls in vLLM through ray.llm's error classes (11 s of the driver's start on
    the H200, before the engine actors, which import vLLM for real, can start). The driver imports that module as
    on a node without vLLM: a stand-in vLLM on the path is not imported while the stage's modules load, is
    importable after, and where the process had imported vLLM before, ray.llm gets its real classes."""
    pkg = tmp_path / "vllm"
    (pkg / "v1" / "engine").mkdir(parents=True)
    for init in (pkg, pkg / "v1", pkg / "v1" / "engine"):
        (init / "__init__.py").write_text("")
    (pkg / "exceptions.py").write_text("class VLLMClientError(Exception): pass\n")
    (pkg / "v1" / "engine" / "exceptions.py").write_text("class EngineDeadError(Exception): pass\n")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[3])])}

    def driver(order: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", DRIVER_IMPORTS, order], env=env, capture_output=True, text=True, timeout=80
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout.strip().splitlines()[-1]

    assert driver("stage-only") == "False []"
    assert driver("vllm-first") == "True ['EngineDeadError', 'VLLMClientError']"


@pytest.mark.timeout(240)
def test_vllm_stage_keeps_its_concurrent_batches_in_the_engine_and_streams_shards(tiny_base, tmp_path):
    """synth's real plan and ray.data.llm's real stages, a fake engine (tests/fake_vllm.py: 64 running requests,
    3 s each) in place of vLLM, in a subprocess with its own Ray. 64 prompts x 4 samples in batches of 8:
    `max_concurrent_batches` asks for 16 batches (128 requests) in the engine. With the samples in one block, Ray
    Data ran one task with at most 4 batches at once (32 requests: half the engine idle) and handed its rows on
    only at the end, so no shard reached the driver before the last batch was done. And ray.data.llm passes on at
    most 1.1 x max_num_seqs (71) requests unless told otherwise: the engine had no queue to refill from."""
    prompts, _ = gsm8k_prompts(tmp_path, 64)
    out = tmp_path / "traces"
    fake = Path(__file__).resolve().parents[2] / "fake_vllm.py"
    env = os.environ | {"PYTHONPATH": str(fake.parents[1]), "NANOFORGE_PROGRESS": "0"}
    args = ["--batch-size", "8", "--max-num-seqs", "64", "--request-s", "3", "--shard-rows", "32", "--cpus", "8"]
    proc = subprocess.run(
        [sys.executable, str(fake), str(prompts), str(tiny_base), str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert read_manifest(out)["counts"]["samples"] == 256 and stats["shard_files"] == 8
    # the completions are the engine's own text (no detokenize stage after it): the fake's 8 tokens, decoded
    from pipelines.reasoning.traces import read_shards

    traces = read_shards(out / "traces", ["messages", "reasoning", "error"]).to_pylist()
    assert len(traces) == 256 and not any(t["error"] for t in traces)
    assert all(t["messages"][-1]["content"] != assistant_content("", t["reasoning"]) for t in traces)
    assert stats["max_batches"] >= 8
    assert stats["max_requests"] > 71  # the engine full (64) and as many again queued in it, not 71 in all
    assert stats["avg_batches"] >= 6  # over the engine's whole run (4 at most before)
    engine_done = stats["engine_start_s"] + stats["engine_span_s"]
    assert stats["first_shard_s"] < engine_done  # shards reach the driver while the engine still runs


def test_vllm_rows_keep_the_columns_scoring_needs():
    """ray.data.llm adds its own columns; the sample keeps its inputs (its `verifier` too: a code prompt is scored
    by the code verifier, not as math) and a failed row keeps its error instead of a completion."""
    from pipelines.reasoning.backends import from_vllm

    sample = {
        "id": "p:0",
        "prompt_id": "p",
        "messages": [],
        "answer": "x",
        "verifier": "code",
        "reasoning": "on",
        "sampling": {"max_new_tokens": 8},
        "source": "s",
        "piece": None,
    }
    engine = {"generated_text": "def f(): pass", "num_generated_tokens": 8, "prompt": "...", "request_id": 3}
    out = from_vllm(sample | engine)
    assert out == sample | {"completion": "def f(): pass", "num_generated_tokens": 8, "truncated": True, "error": None}
    failed = from_vllm(sample | {"__inference_error__": "CUDA OOM", "num_generated_tokens": None})
    assert failed["completion"] is None and failed["error"] == "CUDA OOM" and failed["verifier"] == "code"


def test_openai_failed_rows_are_error_samples_and_retried_on_resume(ray_local, chat_server, tmp_path):
    """A timeout or a 502 after its retries is a counted `error` sample, not a run abort; a resume retries it."""
    prompts, rows = gsm8k_prompts(tmp_path, 3)
    golds = [r["answer"].split("####")[-1].strip() for r in rows]
    ChatServer.plan = {
        r["question"]: (b, g) for r, b, g in zip(rows, ["correct", "slow", "broken"], golds, strict=True)
    }
    ChatServer.requests = []
    out = tmp_path / "traces"
    argv = [
        "--prompts_path",
        str(prompts),
        "--backend",
        "openai",
        "--model_name_or_path",
        "served-model",
        "--api_base",
        chat_server,
        "--api_key_env",
        "",
        "--num_samples",
        "1",
        "--reasoning",
        "on",
        "--request_timeout_s",
        "1",
        "--max_retries",
        "1",
        "--output_dir",
        str(out),
    ]
    synthesize(parse_args(argv))

    traces = {ChatServer.plan[t["messages"][1]["content"]][0]: t for t in pq.read_table(out / "traces").to_pylist()}
    assert traces["correct"]["error"] is None and traces["correct"]["verified"] is True
    assert traces["slow"]["error"] == "endpoint: no response within request_timeout_s=1 (after 2 attempts)"
    assert traces["broken"]["error"].startswith("endpoint: HTTP 502: <html>502 Bad Gateway")
    assert read_manifest(out)["counts"]["errors"] == 2
    assert len(ChatServer.requests) == 1 + 2 + 2  # one try, and a retry for each failing row

    # An interrupted run: its partial directory holds these shards; the endpoint works again.
    partial = tmp_path / ".traces.partial"
    shutil.copytree(out, partial)
    (partial / ".lineage.json").write_text(json.dumps({"hash": read_manifest(out)["hash"], "stage": "synth"}))
    (partial / "manifest.json").unlink()
    shutil.rmtree(out)
    ChatServer.plan = {q: ("correct", gold) for q, (_, gold) in ChatServer.plan.items()}
    ChatServer.requests = []
    synthesize(parse_args(argv))
    counts = read_manifest(out)["counts"]
    assert counts["errors"] == 0 and counts["samples"] == 3 and counts["samples_resumed"] == 1
    assert len(ChatServer.requests) == 2  # only the two failed samples were sent again
    assert sorted(t["id"] for t in pq.read_table(out / "traces").to_pylist()) == sorted(
        traces[b]["id"] for b in traces
    )


def test_transformers_sample_depends_on_its_own_seed_not_on_its_batch(tiny_base):
    """A sampled row gets the same completion alone or batched with other rows (a seed per row, not per batch), so
    synth and rephrase give the same bytes however Ray Data groups rows into batches; another seed, another text."""
    import pyarrow as pa

    from pipelines.reasoning.backends import TransformersGenerator

    generator = TransformersGenerator(str(tiny_base), num_threads=1, max_prompt_tokens=None)

    def row(i: int, text: str, seed: int) -> dict:
        sampling = {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": 10, "seed": seed}
        return {"id": f"r{i}", "messages": [{"role": "user", "content": text}], "sampling": sampling}

    def completions(rows: list[dict]) -> list[str]:
        return generator(pa.Table.from_pylist(rows)).column("completion").to_pylist()

    target = row(0, "Rewrite this text about rivers.", 7)
    others = [row(1, "A much longer request that pads the batch: " + "words " * 30, 1), row(2, "Short.", 2)]
    alone = completions([target])[0]
    assert completions([*others, target])[-1] == alone  # another row's seed first in the batch
    assert completions([target, *others])[0] == alone
    assert completions([target | {"sampling": target["sampling"] | {"seed": 8}}])[0] != alone


def test_unseeded_vllm_requests_carry_no_seed_and_other_backends_refuse_them(tmp_path):
    """`seeded: false` (vllm only): the sample rows record no seed and the engine gets none, so vLLM samples in
    one batched pass instead of a generator per request (~1.4x its tokens/s); seeded rows keep theirs."""
    from types import SimpleNamespace

    from pipelines.core.config import ConfigError
    from pipelines.reasoning.backends import vllm_request
    from pipelines.reasoning.traces import sample_rows
    from pipelines.synth import parse_args

    prompt = {"prompt_id": "p", "messages": [{"role": "user", "content": "1+1?"}], "answer": "2", "solution": None}
    base = dict(reasoning="on", temperature=0.6, top_p=0.95, max_new_tokens=8, seed=0, backend="vllm", source="t")
    seeded, unseeded = (sample_rows(prompt, SimpleNamespace(**base, seeded=s), 2) for s in (True, False))
    assert [r["sampling"]["seed"] for r in unseeded] == [None, None]
    assert len({r["sampling"]["seed"] for r in seeded}) == 2 and None not in {r["sampling"]["seed"] for r in seeded}
    params = vllm_request(seeded[0])["sampling_params"]
    assert params == {"temperature": 0.6, "top_p": 0.95, "max_tokens": 8, "seed": seeded[0]["sampling"]["seed"]}
    assert "seed" not in vllm_request(unseeded[0])["sampling_params"]
    (tmp_path / "p.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    argv = ["--prompts_path", str(tmp_path / "p.jsonl"), "--model_name_or_path", "m", "--seeded", "false"]
    assert parse_args([*argv, "--backend", "vllm"]).seeded is False
    with pytest.raises(ConfigError, match="seeded: false is for the vllm backend"):
        parse_args([*argv, "--backend", "transformers"])
    from pipelines.rephrase import parse_args as rephrase_args  # rephrase, the largest generation job, too

    argv = ["--input_path", "docs", "--model_name_or_path", "m", "--seeded", "false"]
    assert rephrase_args([*argv, "--backend", "vllm"]).seeded is False
    with pytest.raises(ConfigError, match="seeded: false is for the vllm backend"):
        rephrase_args([*argv, "--backend", "openai"])


@pytest.mark.timeout(120)
def test_building_the_vllm_stage_waits_on_no_ray_call_makes_no_config_and_its_telemetry_still_arrives(
    ray_local, tiny_base, monkeypatch
):
    """ray.data.llm's build `ray.get`s its usage telemetry, and so waits for a new actor's process to start (0.9 s of
    a 1.0 s build here, 2.5-4.2 s on the H200 hosts) before the plan, and the engine actor, can start; and it makes
    the model's config for the telemetry's architecture, which with transformers 5.17 imports transformers' modeling
    and generation modules (1.6 s here, 8.7-9.7 s on the H200 host). The stage's build sends the record and goes
    on, reads the architecture from config.json, and the record still reaches ray.data.llm's telemetry agent."""
    from types import SimpleNamespace

    import ray
    import transformers
    from ray.llm._internal.batch.observability.usage_telemetry import usage

    from pipelines.reasoning.backends import vllm

    waited, configs = [], []
    real_get = ray.get
    monkeypatch.setattr(ray, "get", lambda *a, **k: waited.append(a) or real_get(*a, **k))
    made = classmethod(lambda cls, *a, **k: configs.append(a) or SimpleNamespace(architectures=["Made"]))
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", made)
    cfg = SimpleNamespace(
        model_name_or_path=str(tiny_base), max_prompt_tokens=None, max_new_tokens=16, engine_kwargs={},
        batch_size=8, num_workers=1, accelerator_type=None, model_revision=None,
    )  # fmt: skip
    vllm(ray.data.from_items([{"id": 0}]), cfg)
    assert waited == []
    assert configs == []
    assert vars(transformers.AutoConfig)["from_pretrained"] is made  # put back after the build
    monkeypatch.undo()
    agent = ray.get_actor(usage.LLM_BATCH_TELEMETRY_ACTOR_NAME, namespace=usage.LLM_BATCH_TELEMETRY_NAMESPACE)
    report = ray.get(agent.generate_report.remote(), timeout=60)
    assert "NemotronHForCausalLM" in report[usage.BatchTelemetryTags.LLM_BATCH_MODEL_ARCHITECTURE]
    assert usage.TelemetryAgent.push_telemetry_report.__name__ == "push_telemetry_report"  # ray.data.llm's, back
