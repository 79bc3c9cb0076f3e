"""Generation backends for `synth` and `rephrase`, one small interface: `BACKENDS[name](ds, cfg) -> ds`.

Each takes a Ray dataset of sample rows (one row per sample: `id`, `prompt_id`, `messages` with the reasoning flag
in the system turn, `reasoning`, `sampling` = {temperature, top_p, max_new_tokens, seed}, `solution`, ...) and
returns it with four more columns:

    completion            str | None   the generated assistant text (None when the row failed)
    num_generated_tokens  int | None   tokens the model generated (None when unknown)
    truncated             bool         generation stopped at max_new_tokens
    error                 str | None   why the row failed; failures are recorded, never fatal to the run

- `vllm`: `ray.data.llm` vLLM engine processor (GPU). One row per sample because the processor keeps only one
  output when `n > 1` (ray#53396); the completion is vLLM's own text (no detokenize stage after the engine);
  truncation inferred from token counts (the processor has no finish_reason);
  fed one block per batch (`batch_blocks`, as the two below), else the engine holds 4 batches, whatever
  `max_concurrent_batches` says.
- `transformers`: batched `model.generate` in a Ray Data actor pool (CPU by default), any local HF causal LM; each
  row samples from its own seed (`RowSeededSampler`), so its text does not depend on the batch it lands in.
- `openai`: an OpenAI-compatible `/v1/chat/completions` endpoint (e.g. `vllm serve`): `batch_size` requests in flight
  per worker, `request_timeout_s` each, retries with backoff; a row that still fails is an `error` sample.
- `replay`: no model; the row's existing solution becomes the completion (see `prompt_formats.replay_completion`).

Length (~610 lines): the four backends share the row contract above and each is small; one file keeps them comparable.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import math
import os
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import ray

from pipelines.core.runtime import check_actor_cpus
from pipelines.reasoning.prompt_formats import replay_completion
from pipelines.reasoning.vllm_graphs import engine_env, hybrid_engine_kwargs

OUTPUT_COLUMNS = ("completion", "num_generated_tokens", "truncated", "error")
log = logging.getLogger(__name__)


def _rows(batch: pa.Table) -> list[dict[str, Any]]:
    return batch.to_pylist()


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows)


# --- replay ---------------------------------------------------------------------------------------------------------


def replay(ds: ray.data.Dataset, cfg) -> ray.data.Dataset:
    """Existing solutions as traces; token counts come from `model_name_or_path`'s tokenizer when one is given."""

    def convert(batch: pa.Table) -> pa.Table:
        tokenizer = load_tokenizer(cfg.model_name_or_path, cfg.model_revision) if cfg.model_name_or_path else None
        rows = _rows(batch)
        for row in rows:
            if not row.get("solution"):
                row.update(completion=None, num_generated_tokens=None, truncated=False, error="replay: no solution")
                continue
            text = replay_completion(cfg.prompt_format, row["solution"], row.get("answer"), row["reasoning"])
            n = len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer else None
            row.update(completion=text, num_generated_tokens=n, truncated=False, error=None)
        return _table(rows)

    return ds.map_batches(convert, batch_format="pyarrow", batch_size=cfg.batch_size)


@functools.lru_cache(maxsize=4)  # once per worker process, not per batch
def load_tokenizer(path: str, revision: str | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, revision=revision)


# --- transformers ---------------------------------------------------------------------------------------------------


class TransformersGenerator:
    """A Ray Data actor holding one model; `__call__` generates a batch of rows, grouped by sampling parameters."""

    def __init__(
        self,
        model: str,
        num_threads: int,
        max_prompt_tokens: int | None,
        dtype: str = "float32",
        revision: str | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(num_threads)
        self.torch = torch
        self.tokenizer = load_tokenizer.__wrapped__(model, revision)  # its own copy: padding is changed below
        self.tokenizer.padding_side = "left"  # decoder-only batching: prompts end where generation starts
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype), revision=revision).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos if eos is not None else self.tokenizer.eos_token_id])
        self.max_prompt_tokens = max_prompt_tokens

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = _rows(batch)
        prompts = [
            self.tokenizer.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=False) for r in rows
        ]
        groups: dict[tuple, list[int]] = {}
        for i, row in enumerate(rows):
            n_prompt = len(self.tokenizer(prompts[i], add_special_tokens=False)["input_ids"])
            if self.max_prompt_tokens and n_prompt > self.max_prompt_tokens:
                row.update(
                    completion=None,
                    num_generated_tokens=None,
                    truncated=False,
                    error=f"prompt too long: {n_prompt} tokens > max_prompt_tokens={self.max_prompt_tokens}",
                )
                continue
            s = row["sampling"]
            groups.setdefault((s["temperature"], s["top_p"], s["max_new_tokens"]), []).append(i)
        for (temperature, top_p, max_new_tokens), idx in groups.items():
            seeds = [rows[i]["sampling"]["seed"] for i in idx]
            try:
                outs = self._generate([prompts[i] for i in idx], temperature, top_p, max_new_tokens, seeds)
            except Exception:  # one bad row must not sink its batch: retry each row alone
                outs = []
                for i, seed in zip(idx, seeds, strict=True):
                    try:
                        outs += self._generate([prompts[i]], temperature, top_p, max_new_tokens, [seed])
                    except Exception as e_row:
                        outs.append(
                            dict(
                                completion=None,
                                num_generated_tokens=None,
                                truncated=False,
                                error=f"{type(e_row).__name__}: {e_row}"[:2000],
                            )
                        )
            for i, out in zip(idx, outs, strict=True):
                rows[i].update(out)
        return _table(rows)

    def _generate(self, prompts: list[str], temperature: float, top_p: float, max_new_tokens: int, seeds: list[int]):
        torch = self.torch
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        # Sampling draws from one generator per row, seeded by the row (RowSeededSampler), and greedy decoding takes
        # the drawn token: a row's text is the same whatever other rows share its batch.
        processors = [RowSeededSampler(seeds, temperature, top_p)] if temperature > 0 else []
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                logits_processor=processors,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        results = []
        for ids in out[:, enc["input_ids"].shape[1] :].tolist():
            stop = next((j for j, t in enumerate(ids) if t in self.eos_ids), None)
            n = len(ids) if stop is None else stop + 1  # the stop token counts, as in vLLM
            text = self.tokenizer.decode(ids[: n if stop is None else stop], skip_special_tokens=True)
            results.append(dict(completion=text, num_generated_tokens=n, truncated=stop is None, error=None))
        return results


class RowSeededSampler:
    """A `logits_processor` that samples each row's next token with temperature and top-p (as transformers' warpers
    do) from that row's own `torch.Generator`, and leaves only that token possible, so greedy decoding picks it.

    transformers' `do_sample` draws a whole batch from the global generator: a row's text then depends on its
    batch's first seed and on its place in the batch, i.e. on how Ray Data happened to group rows."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        import torch

        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids, scores):  # scores: [batch, vocab] logits of the next token
        import torch

        scores = scores.float() / self.temperature
        if self.top_p < 1.0:  # drop the least likely tokens whose mass sums to at most 1 - top_p, keep at least one
            ordered, order = torch.sort(scores, descending=False)
            drop = ordered.softmax(dim=-1).cumsum(dim=-1) <= (1 - self.top_p)
            drop[..., -1:] = False
            scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
        probs = scores.softmax(dim=-1)
        picked = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators, strict=True)])
        only = torch.full_like(scores, float("-inf"))
        return only.scatter(1, picked[:, None], 0.0)


def transformers(ds: ray.data.Dataset, cfg) -> ray.data.Dataset:
    if not Path(cfg.model_name_or_path).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FileNotFoundError(f"model not found: {cfg.model_name_or_path} (offline, and not a local folder)")
    check_actor_cpus(cfg.num_workers, cfg.num_cpus_per_worker, "num_workers x num_cpus_per_worker")
    return batch_blocks(ds, cfg.batch_size).map_batches(  # one block: one task, so one busy actor of num_workers
        TransformersGenerator,
        fn_constructor_kwargs=dict(
            model=cfg.model_name_or_path,
            num_threads=cfg.num_cpus_per_worker,
            max_prompt_tokens=cfg.max_prompt_tokens,
            revision=cfg.model_revision,
        ),
        batch_format="pyarrow",
        batch_size=cfg.batch_size,
        compute=ray.data.ActorPoolStrategy(size=cfg.num_workers),
        num_cpus=cfg.num_cpus_per_worker,
    )


# --- vllm -----------------------------------------------------------------------------------------------------------


# ray.data.llm builds its engine in vLLM's ENGINE_CONTEXT, whose defaults are a server's: 128 running sequences and
# 2,048 tokens per step, where `vllm.LLM` gets 1,024 and 16,384 on a GPU of 70 GB or more (vLLM 0.26,
# `EngineArgs.get_batch_defaults`; the H200 logs showed 2,048 against 16,384). The stage is offline batch generation,
# as `vllm.LLM` is, so it starts from `LLM`'s defaults. A hybrid uses all 1,024: a sequence holds a few MB of Mamba
# state instead of a long KV cache.
OFFLINE_ENGINE_DEFAULTS = {"max_num_seqs": 1024, "max_num_batched_tokens": 16384}


def vllm_engine_kwargs(cfg) -> dict[str, Any]:
    """Engine kwargs from the YAML over `vllm.LLM`'s batch defaults (`OFFLINE_ENGINE_DEFAULTS`), plus what
    Nemotron-H needs: Mamba state cache in float32 (Nano 2 recipe), its CUDA graphs (`vllm_graphs`: decode-only
    steps in full graphs), and every decode batch size up to its 1,024 running sequences captured (at 8k-token
    contexts on an H200 vLLM fits ~1,140 hybrid sequences against ~410 for a dense model of its size; past vLLM's
    default capture size of 512 the decode steps would run eagerly)."""
    revision = getattr(cfg, "model_revision", None)  # weights and tokenizer at the pinned commit
    kwargs = {
        "max_model_len": cfg.max_prompt_tokens + cfg.max_new_tokens if cfg.max_prompt_tokens else None,
        "revision": revision,
        "tokenizer_revision": revision,
    }
    kwargs = OFFLINE_ENGINE_DEFAULTS | {k: v for k, v in kwargs.items() if v is not None} | dict(cfg.engine_kwargs)
    if _is_nemotron_h(cfg.model_name_or_path):
        kwargs = hybrid_engine_kwargs(kwargs, kwargs["max_num_seqs"])
    return kwargs


def max_concurrent_batches(engine_kwargs: dict[str, Any], batch_size: int) -> int:
    """Batches in flight per engine so that twice its `max_num_seqs` requests are queued: each Ray Data batch
    returns only when its slowest row finishes, and 8 batches of 16 (ray.data.llm's default) keep 128 requests in
    an engine that could run 256-1,024 (the stage ran at 0.75x raw vLLM that way)."""
    running = engine_kwargs.get("max_num_seqs", OFFLINE_ENGINE_DEFAULTS["max_num_seqs"])
    return max(8, math.ceil(2 * running / batch_size))


def _is_nemotron_h(model: str) -> bool:
    config = Path(model) / "config.json"
    if config.is_file():
        return json.loads(config.read_text()).get("model_type") == "nemotron_h"
    name = model.lower()
    return "nemotron-h" in name or "nemotron-nano" in name or "nemotron_h" in name


def import_in_background(backend: str) -> threading.Thread | None:
    """vllm: import in a thread what `build_processor` imports in the driver (torch, transformers' AutoConfig,
    ray.data.llm's stages), so that it overlaps Ray's start (on a 2-core CPU machine the stream then starts 0.7 s
    after Ray is ready instead of 3.4-3.9 s). vLLM itself is not among them (`ray_llm_errors_without_vllm`), nor
    AutoTokenizer, which the driver never uses: with transformers 5.17 it loaded `auto_factory` and torch.distributed's
    tensor modules, 4.8 s of the 12.4 s these imports took on the H200 (fifteenth lease, `python -X importtime`).
    None otherwise."""
    if backend != "vllm":
        return None

    def warm() -> None:
        with contextlib.suppress(Exception):  # only a head start: the build imports them again and reports errors
            import torch  # noqa: F401
            from transformers import AutoConfig  # noqa: F401 (lazy: this loads its modules)

            ray_llm_errors_without_vllm()
            from ray.data.llm import build_processor  # noqa: F401
            from ray.llm._internal.batch.stages import ChatTemplateStage, TokenizeStage, vllm_engine_stage  # noqa: F401

    thread = threading.Thread(target=warm, name="import-vllm-backend", daemon=True)
    thread.start()
    return thread


RAY_LLM_ERRORS = "ray.llm._internal.common.errors"


def ray_llm_errors_without_vllm() -> None:
    """Import ray.llm's error module in the driver as on a node without vLLM, so that building the stage does not
    import vLLM here.

    The module is the only one of ray.data.llm's that the driver loads and that imports vLLM (for two exception
    classes, `EngineDeadError` and `VLLMClientError`, in a try/except ImportError: a CPU head node has no vLLM). On
    the H200 (twelfth lease) that import cost the driver 10.8-11.3 s, and the engine actors, which import vLLM again
    for real, start only once the driver has built the plan. The classes serve the engine stage's UDF, which runs
    in those actors, where the module is imported afresh with vLLM. Where this process has imported vLLM already,
    or the module, nothing changes."""
    if "vllm" in sys.modules or RAY_LLM_ERRORS in sys.modules:
        return
    sys.modules["vllm"] = None  # `import vllm...` raises ModuleNotFoundError while it is set
    try:
        importlib.import_module(RAY_LLM_ERRORS)
    finally:
        if sys.modules.get("vllm", False) is None:
            del sys.modules["vllm"]


def vllm(ds: ray.data.Dataset, cfg) -> ray.data.Dataset:
    ray_llm_errors_without_vllm()
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    engine_kwargs = vllm_engine_kwargs(cfg)
    batches = max_concurrent_batches(engine_kwargs, cfg.batch_size)
    config = vLLMEngineProcessorConfig(
        model_source=cfg.model_name_or_path,
        engine_kwargs=engine_kwargs,
        runtime_env={"env_vars": engine_actor_env(cfg.model_name_or_path)},
        concurrency=cfg.num_workers,
        batch_size=cfg.batch_size,
        max_concurrent_batches=batches,
        # Every request the actor holds goes into the engine's own queue, as `vllm.LLM.generate` queues them all.
        # ray.data.llm's default passes on 1.1 x max_num_seqs and holds the rest in the actor: on the H200 the engine
        # had 52 waiting behind 512 running, and when a wave of sequences finished together it ran 177-300 until the
        # actor's event loop (busy with vLLM's per-step outputs) sent more.
        max_pending_requests=batches * cfg.batch_size,
        accelerator_type=cfg.accelerator_type,
        should_continue_on_error=True,  # failed rows come back with __inference_error__ instead of killing the run
        # vLLM returns each completion's text (its own detokenizer, as raw vLLM's); ray.data.llm's detokenize stage
        # would decode every generated token again, in one more actor between the engine and the writer
        detokenize_stage=False,
        # vLLM 0.26's Ray metrics hook fails to import in the engine actor (RayPrometheusMetric ImportError, seen on
        # the H100); the stage reports its own throughput
        log_engine_metrics=False,
    )
    # The row maps after the engine at zero CPUs, as synth's write_traces: the three fuse into one task per batch,
    # which never waits for a CPU the actors hold (the map before the stages keeps its CPU: at zero, Ray Data starts
    # a task, and so a worker process, for every batch at once)
    light = dict(num_cpus=0)
    with telemetry_not_awaited(), architecture_read_alone():
        processor = build_processor(config, preprocess=vllm_request, postprocess_map_kwargs=light)
    final_outputs_only(processor)
    return processor(batch_blocks(ds, cfg.batch_size)).map(from_vllm, **light)


# vLLM settings of the caller's environment that the engine actors get as they are: the process start method
# (`spawn` undoes `engine_core_forked`), and the model runner (`vllm_graphs` gives a hybrid V2 by default; `0` keeps
# V1, `1` asks for V2 where vLLM would not pick it).
CALLER_VLLM_ENV = ("VLLM_WORKER_MULTIPROC_METHOD", "VLLM_USE_V2_MODEL_RUNNER")


def engine_actor_env(model: str) -> dict[str, str]:
    """The engine actors' environment: the graphs rule (`vllm_graphs.engine_env`), and `CALLER_VLLM_ENV` where the
    caller's environment sets them. Ray workers on a cluster do not inherit the submitting process's environment, so
    they are passed on here."""
    caller = {name: os.environ[name] for name in CALLER_VLLM_ENV if os.environ.get(name)}
    return engine_env(hybrid=_is_nemotron_h(model)) | caller


@contextlib.contextmanager
def swapped(owner, name: str, value):
    """`owner.name` is `value` inside the block, and what it was after (as defined on `owner`: a class's classmethod
    comes back a classmethod). The vLLM stage's few changes to ray.data.llm's and vLLM's behaviour are made so."""
    own = vars(owner)[name]
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, own)


@contextlib.contextmanager
def telemetry_not_awaited():
    """While ray.data.llm builds its stages, its usage telemetry goes to its agent actor without the driver waiting
    for the answer.

    The build creates that actor, then `ray.get`s its record call: the driver waits for a new worker process to
    start before the plan can run (0.9 s of a 1.0 s build on a 2-core CPU machine; the whole build took 2.5-4.2 s on
    the H200 hosts), and the engine actor, which Ray Data creates only once the plan runs, waits behind it. The record
    still reaches the agent, as before; only the wait goes. A Ray without that agent is left as it is."""
    try:
        from ray.llm._internal.batch.observability.usage_telemetry.usage import TelemetryAgent
    except ImportError:
        yield
        return

    def send(agent, telemetry) -> None:  # ray.data.llm's push, less its ray.get
        if agent.remote_telemetry_agent is not None:
            try:
                agent.remote_telemetry_agent.record.remote(telemetry)
            except Exception:  # as theirs: telemetry never breaks the build
                log.exception("Failed to push LLM batch telemetry")

    with swapped(TelemetryAgent, "push_telemetry_report", send):
        yield


@contextlib.contextmanager
def architecture_read_alone():
    """While ray.data.llm builds its stages, `AutoConfig.from_pretrained` in the driver reads the model's config.json
    and makes no config class: what the build reads of it is `architectures`, for its usage telemetry.

    With transformers 5.17 (the GPU image's), making the model's config class imports its module, whose docstring
    decorator imports `modeling_auto`, and so transformers' generation utilities, accelerate, scikit-learn, SciPy and
    torch._dynamo: the driver's build took 8.7-9.7 s on the H200 host (seventeenth lease, `benchmarks.gpu.startup
    --build`; 1.6 s -> 0.05 s on a 2-core CPU machine with 5.17), all of it before the engine actor, which reads the
    config for real, can start. A config the build cannot read is the build's to report, as before (it logs it and
    goes on)."""
    import transformers

    def architectures_only(model_path, **_):
        config = transformers.PretrainedConfig.get_config_dict(model_path)[0]
        return SimpleNamespace(architectures=config.get("architectures") or [])

    with swapped(transformers.AutoConfig, "from_pretrained", staticmethod(architectures_only)):
        yield


def final_outputs_only(processor) -> None:
    """Have each engine actor's vLLM make one output per request, when it finishes (`RequestOutputKind.FINAL_ONLY`,
    what `vllm.LLM.generate` and vLLM's non-streaming server ask for).

    ray.data.llm leaves vLLM's default, CUMULATIVE: a `RequestOutput` holding the whole text so far for every running
    request at every step (~35,000 a second for the 1B model on an H200), built on the actor's event loop, the loop
    that also feeds the engine; ray.data.llm reads only the finished one. The rows cannot ask for FINAL_ONLY
    themselves: `RequestOutputKind` is an Enum and rows pass through Arrow. So the engine stage's UDF gets a subclass
    that sets it on each request's `SamplingParams` as they reach the engine, and starts the engine with its
    EngineCore forked where it can (`engine_core_forked`)."""
    from ray.llm._internal.batch.stages.vllm_engine_stage import vLLMEngineStage

    for stage in processor.stages.values():
        if isinstance(stage, vLLMEngineStage):
            stage.fn = _final_only_udf(stage.fn)


def _final_only_udf(udf: type) -> type:
    class FinalOnly(udf):
        def __init__(self, *args, **kwargs):
            with engine_core_forked(kwargs.get("engine_kwargs") or {}):
                super().__init__(*args, **kwargs)
            engine = getattr(self.llm, "engine", None)
            if callable(getattr(engine, "generate", None)):  # vLLM's AsyncLLM (a test's fake engine has none)
                engine.generate = final_only_generate(engine.generate)

    FinalOnly.__name__ = FinalOnly.__qualname__ = f"FinalOnly{udf.__name__}"
    return FinalOnly


@contextlib.contextmanager
def engine_core_forked(engine_kwargs: dict):
    """While vLLM starts a single-GPU engine in this Ray actor, let it fork its EngineCore process, as raw
    `vllm.LLM` does, instead of spawning it.

    vLLM spawns from any Ray actor (`_maybe_force_spawn`; vllm#14705: a forked child that reached Ray's GCS for its
    placement group hung), and a spawned EngineCore imports torch and vLLM afresh: on the H200 (tenth lease) 17 s
    between the actor's engine config and the EngineCore's first line; forked, 2 s (eleventh lease; raw vLLM 1 s).
    An engine of one GPU runs ray.data.llm's `uni` executor: model and scheduler in that one child, no placement group,
    no Ray call; so only such an engine forks (tensor or pipeline parallel engines keep spawn, as do CUDA already
    initialised in the actor and `VLLM_WORKER_MULTIPROC_METHOD=spawn` in the engine's environment, vLLM's checks)."""
    single = engine_kwargs.get("tensor_parallel_size", 1) * engine_kwargs.get("pipeline_parallel_size", 1) == 1
    if not single or engine_kwargs.get("distributed_executor_backend", "uni") != "uni":
        yield
        return
    try:
        from vllm.utils import system_utils
    except ImportError:  # a vLLM without the check (or a test's stand-in engine)
        yield
        return
    with swapped(system_utils, "is_in_ray_actor", lambda: False):  # the check `_maybe_force_spawn` makes; CUDA's stays
        yield


def final_only_generate(generate):
    """`AsyncLLM.generate` with `output_kind=FINAL_ONLY` on its sampling params (ray.data.llm passes them by name)."""
    from vllm.sampling_params import RequestOutputKind

    @functools.wraps(generate)
    def final_only(*args, sampling_params, **kwargs):
        sampling_params.output_kind = RequestOutputKind.FINAL_ONLY
        return generate(*args, sampling_params=sampling_params, **kwargs)

    return final_only


def batch_blocks(ds: ray.data.Dataset, batch_size: int) -> ray.data.Dataset:
    """The rows in blocks of at most `batch_size` rows, streamed (in order when the plan keeps order).

    Upstream map outputs are merged into blocks of up to 128 MiB (one prompts file -> one block of every sample),
    and each ray.data.llm stage runs one Ray Data task per input block, with at most 4 of its batches at once
    (`RAY_DATA_DEFAULT_ASYNC_BATCH_UDF_MAX_CONCURRENCY`) whatever `max_concurrent_batches` says, returning its
    rows only when the whole block is done. One block per batch makes each batch its own task: the engine actor
    runs `max_concurrent_batches` of them and their rows (and synth's shards) move on as each one finishes. The
    transformers and openai actor pools likewise give a block to one actor: one block kept `num_workers - 1` idle."""
    blocks = ds.repartition(target_num_rows_per_block=batch_size)
    # Its tasks reserve no CPU, like the reader's: model actors may hold every CPU (ray 2.60's repartition takes no
    # remote args; its logical op's dict is the one the planner reads)
    blocks._logical_plan.dag.ray_remote_args["num_cpus"] = 0
    return blocks


def vllm_request(row: dict[str, Any]) -> dict[str, Any]:
    """A sample row's sampling parameters for ray.data.llm; its seed where it has one (`seeded: false` rows have
    none: per-request seeds cost vLLM 0.26 ~28% of its tokens/s, 37k against 52k on an H200)."""
    s = row["sampling"]
    params = dict(temperature=s["temperature"], top_p=s["top_p"], max_tokens=s["max_new_tokens"])
    return dict(sampling_params=params | ({"seed": s["seed"]} if s.get("seed") is not None else {}))


def from_vllm(row: dict[str, Any]) -> dict[str, Any]:
    """A ray.data.llm output row as a sample: its input columns, the completion, and the failure if any."""
    error = row.pop("__inference_error__", "") or None
    n = row.get("num_generated_tokens")
    return {
        **{k: row[k] for k in row if k in _SAMPLE_COLUMNS},
        "completion": None if error else row.get("generated_text", ""),
        "num_generated_tokens": None if error else n,
        "truncated": bool(not error and n is not None and n >= row["sampling"]["max_new_tokens"]),
        "error": error,
    }


# --- openai-compatible endpoint -------------------------------------------------------------------------------------


class OpenAIChat:
    """A Ray Data actor that sends each row of a batch to `/chat/completions`, a few requests at a time.

    Our own small client rather than ray.data.llm's HttpRequestProcessorConfig, which has no request timeout and
    raises (aborting the run) once a row's retries are spent. Here a row that times out, cannot connect or gets
    an error status after `max_retries` retries (429, 408 and 5xx are retried with exponential backoff; other 4xx
    are not) comes back as a failed sample with `error` set; synth counts it and retries it on resume.
    """

    RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})

    def __init__(
        self,
        url: str,
        headers: dict,
        timeout_s: float,
        max_retries: int,
        qps: int | None,
        threads: int,
        model: str,
        backoff_s: float = 1.0,
    ):
        import threading

        self.url, self.headers, self.timeout_s, self.max_retries = url, headers, timeout_s, max_retries
        self.interval = 1.0 / qps if qps else 0.0
        self.threads, self.model, self.backoff_s = threads, model, backoff_s
        self.lock, self.next_at = threading.Lock(), 0.0

    def __call__(self, batch: pa.Table) -> pa.Table:
        from concurrent.futures import ThreadPoolExecutor

        rows = _rows(batch)
        with ThreadPoolExecutor(max_workers=max(1, min(self.threads, len(rows)))) as pool:
            outs = list(pool.map(self.one, rows))
        return _table([{**r, **o} for r, o in zip(rows, outs, strict=True)])

    def _wait_turn(self) -> None:  # qps: requests of this worker start at least 1/qps seconds apart
        import time

        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_at)
            self.next_at = start + self.interval
        time.sleep(max(0.0, start - now))

    def one(self, row: dict[str, Any]) -> dict[str, Any]:
        import time
        import urllib.error
        import urllib.request

        s = row["sampling"]
        payload = dict(
            model=self.model,
            messages=row["messages"],
            temperature=s["temperature"],
            top_p=s["top_p"],
            max_tokens=s["max_new_tokens"],
            seed=s["seed"],
        )
        data = json.dumps(payload).encode()
        error = "no attempt"
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            self._wait_turn()
            request = urllib.request.Request(self.url, data=data, headers=self.headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                    return from_response(json.loads(resp.read()))
            except urllib.error.HTTPError as e:
                body = e.read().decode(errors="replace")
                try:
                    detail = json.loads(body).get("error") or body
                except ValueError:
                    detail = body
                message = detail.get("message", json.dumps(detail)) if isinstance(detail, dict) else str(detail)
                error = f"endpoint: {message[:500]}" if e.code < 500 else f"endpoint: HTTP {e.code}: {message[:500]}"
                if e.code not in self.RETRYABLE:
                    break
            except (urllib.error.URLError, OSError) as e:  # TimeoutError is an OSError; urllib may wrap it
                if isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError):
                    error = f"endpoint: no response within request_timeout_s={self.timeout_s:g}"
                else:
                    error = f"endpoint: connection failed: {getattr(e, 'reason', e)}"
            except ValueError as e:  # a 200 whose body is not JSON
                error = f"endpoint: unreadable response: {e}"
        tries = f" (after {attempt + 1} attempts)" if attempt else ""
        return dict(completion=None, num_generated_tokens=None, truncated=False, error=error + tries)


def from_response(resp: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat completion -> the backend's output columns (a reasoning parser's split thinking rejoined)."""
    choices = resp.get("choices") or []
    if resp.get("error") or not choices:
        error = resp.get("error") or "no choices in response"
        message = error.get("message", json.dumps(error)) if isinstance(error, dict) else str(error)
        return dict(completion=None, num_generated_tokens=None, truncated=False, error=f"endpoint: {message}")
    choice, usage = choices[0], resp.get("usage") or {}
    msg = choice.get("message") or {}
    content = msg.get("content") or ""
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")  # vllm serve --reasoning-parser splits it
    if reasoning:
        content = f"<think>\n{reasoning.strip()}\n</think>\n\n{content.strip()}"
    return dict(
        completion=content,
        num_generated_tokens=usage.get("completion_tokens"),
        truncated=choice.get("finish_reason") == "length",
        error=None,
    )


def openai(ds: ray.data.Dataset, cfg) -> ray.data.Dataset:
    key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    return batch_blocks(ds, cfg.batch_size).map_batches(  # one block: one task, so one busy actor of num_workers
        OpenAIChat,
        fn_constructor_kwargs=dict(
            url=cfg.api_base.rstrip("/") + "/chat/completions",
            headers=headers,
            timeout_s=cfg.request_timeout_s,
            max_retries=cfg.max_retries,
            qps=cfg.qps,
            threads=cfg.batch_size,
            model=cfg.model_name_or_path,
        ),
        batch_format="pyarrow",
        batch_size=cfg.batch_size,
        compute=ray.data.ActorPoolStrategy(size=cfg.num_workers),
        num_cpus=0.25,  # waits on the network
    )


# Input columns the vllm backend passes through (`verifier`: how the trace is scored; `seq`: the sample's place in
# synth's shards; `piece`: rephrase's source piece and lineage). A column left out here reaches the trace as its
# default (a code prompt scored as math).
_SAMPLE_COLUMNS = frozenset(
    {
        "id",
        "prompt_id",
        "messages",
        "answer",
        "solution",
        "reasoning",
        "sampling",
        "source",
        "verifier",
        "piece",
        "seq",
    }
)
BACKENDS = {"replay": replay, "transformers": transformers, "vllm": vllm, "openai": openai}
