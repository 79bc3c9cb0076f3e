"""A fake vLLM engine behind ray.data.llm's real vLLM stage, for CPU tests and benchmarks of the synth plan.

    python tests/fake_vllm.py PROMPTS MODEL OUTPUT_DIR [--samples 4] [--batch-size 64] [--max-num-seqs 512]
                              [--request-s 2] [--cpus 8]

runs `nanoforge synth --backend vllm` with it on a fresh local Ray and prints the engine's in-flight counts as JSON
(a subprocess: the stage's four actors need more logical CPUs than a test session's Ray has).

`install()` swaps only the engine: `build_processor` still builds ray.data.llm's real ChatTemplate -> Tokenize ->
vLLMEngine stages (the engine stage with its real `udf`, `max_concurrency` and actor pool), but the stage's `llm` is
`FakeEngine`, which takes at most `max_pending_requests` requests (ray.data.llm's rule: 1.1 x `max_num_seqs` unless
the config sets it; `vLLMEngineWrapper` holds the rest back), runs at most `max_num_seqs` of them at once, each for
`fake_request_s` seconds, and answers with a few of the prompt's own tokens and their text, as vLLM answers with
tokens and text. Its actor asks
for no GPU. The engine kwargs `fake_request_s` and `fake_stats_path` (a JSON file the actor rewrites after each
batch) configure it; the file holds the in-flight counts over time (`in_flight_stats` summarises them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
from ray.llm._internal.batch.stages import vllm_engine_stage as real

DEFAULT_REQUEST_S = 0.5


class FakeEngine:
    """`vLLMEngineWrapper`'s interface (generate_async, engine.do_log_stats, get_scheduler_config, shutdown)."""

    def __init__(self, max_num_seqs: int, request_s: float, stats_path: str | None, max_pending_requests=None):
        self.max_num_seqs, self.request_s, self.stats_path = max_num_seqs, request_s, stats_path
        self.running = asyncio.Semaphore(max_num_seqs)  # the engine's own limit on running sequences
        if max_pending_requests is None:  # vLLMEngineWrapper.__init__'s default (ray 2.60)
            max_pending_requests = math.ceil(max_num_seqs * 1.1)
        self.max_pending_requests = max_pending_requests
        limited = max_pending_requests > 0
        self.pending = asyncio.Semaphore(max_pending_requests) if limited else contextlib.nullcontext()
        self.request_id = 0
        self.tokenizer = None  # set by FakeEngineUDF: the model's, for the completion's text
        self.batches = self.requests = 0
        self.t0 = time.time()
        # (seconds since start, batches in the actor, requests in the engine: past the pending limit, running or
        # queued in it)
        self.events: list[tuple[float, int, int]] = []
        self.batch_ends: list[float] = []
        self.engine = SimpleNamespace(do_log_stats=self._no_stats)

    async def _no_stats(self) -> None:
        return None

    def get_scheduler_config(self):
        return SimpleNamespace(max_num_seqs=self.max_num_seqs)

    def shutdown(self) -> None:
        return None

    def _event(self, batches: int = 0, requests: int = 0) -> None:
        self.batches += batches
        self.requests += requests
        self.events.append((time.time() - self.t0, self.batches, self.requests))

    def dump(self) -> None:
        if self.stats_path:
            with open(self.stats_path, "w") as f:
                json.dump({"t0": self.t0, "events": self.events, "batch_ends": self.batch_ends}, f)

    async def generate_async(self, row: dict[str, Any]):
        tokens = [int(t) for t in real.maybe_convert_ndarray_to_list(row.pop("tokenized_prompt"))]
        params = row.pop("sampling_params")
        request = SimpleNamespace(
            request_id=self.request_id, idx_in_batch=row[real.StatefulStageUDF.IDX_IN_BATCH_COLUMN]
        )
        request.params = params
        self.request_id += 1
        t = time.perf_counter()
        async with self.pending:  # as vLLMEngineWrapper.generate_async: the rest wait in the actor
            self._event(requests=1)
            try:
                async with self.running:
                    await asyncio.sleep(self.request_s)
            finally:
                self._event(requests=-1)
        out = real.vLLMOutputData(
            prompt=row.pop("prompt", "") or "",
            prompt_token_ids=tokens,
            num_input_tokens=len(tokens),
            generated_tokens=tokens[:8],
            generated_text=self.tokenizer.decode(tokens[:8], skip_special_tokens=True),
            num_generated_tokens=len(tokens[:8]),
        )
        return request, out.model_dump(), time.perf_counter() - t


class FakeEngineUDF(real.vLLMEngineStageUDF):
    """The real stage UDF (its `udf` and error handling) around a `FakeEngine` instead of vLLM."""

    def __init__(
        self, data_column, expected_input_keys, batch_size, max_concurrent_batches, model, engine_kwargs, **kw
    ):
        real.StatefulStageUDF.__init__(self, data_column, expected_input_keys)
        self.model = model
        self.should_continue_on_error = kw.get("should_continue_on_error", False)
        self.task_type = kw.get("task_type", real.vLLMTaskType.GENERATE)
        self.engine_kwargs = dict(engine_kwargs, disable_log_stats=True)
        self.llm = FakeEngine(
            engine_kwargs.get("max_num_seqs", 256),
            float(engine_kwargs.get("fake_request_s", DEFAULT_REQUEST_S)),
            engine_kwargs.get("fake_stats_path"),
            kw.get("max_pending_requests"),
        )
        self.max_pending_requests = self.llm.max_pending_requests
        from transformers import AutoTokenizer

        self.llm.tokenizer = AutoTokenizer.from_pretrained(model)  # vLLM returns text as well as tokens

    async def udf(self, batch):
        self.llm._event(batches=1)
        try:
            async for out in super().udf(batch):
                yield out
        finally:
            self.llm._event(batches=-1)
            self.llm.batch_ends.append(time.time() - self.llm.t0)
            self.llm.dump()

    def __del__(self):
        return None


class FakeEngineStage(real.vLLMEngineStage):
    fn: type = FakeEngineUDF

    def get_dataset_map_batches_kwargs(self, batch_size: int, data_column: str) -> dict[str, Any]:
        kwargs = super().get_dataset_map_batches_kwargs(batch_size, data_column)
        kwargs["num_gpus"] = 0  # a CPU machine; the actor is otherwise as the real stage asks
        return kwargs


def install() -> None:
    """Make `build_processor` build `FakeEngineStage` (ray.data.llm imports the stage class when it builds), in
    this process: the actors get the fake's classes by value, so they need not import tests/."""
    import ray.cloudpickle
    import ray.llm._internal.batch.stages as stages

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    stages.vLLMEngineStage = FakeEngineStage


def in_flight_stats(stats_path: str, t_start: float | None = None) -> dict[str, float]:
    """Max and time-averaged batches and requests in flight, from the first request to the last one's end."""
    data = json.loads(Path(stats_path).read_text())
    events = data["events"]
    first, last = events[0][0], events[-1][0]
    span = max(last - first, 1e-9)
    avg_b = avg_r = 0.0
    for (t, b, r), (t_next, _, _) in zip(events, events[1:], strict=False):
        avg_b += b * (t_next - t)
        avg_r += r * (t_next - t)
    stats = {
        "max_batches": max(e[1] for e in events),
        "avg_batches": avg_b / span,
        "max_requests": max(e[2] for e in events),
        "avg_requests": avg_r / span,
        "engine_span_s": span,
        "first_batch_done_s": min(data["batch_ends"]) - first,
    }
    if t_start is not None:
        stats["engine_start_s"] = data["t0"] + first - t_start
    return stats


class _FirstShard(logging.Handler):
    """When synth's driver logs its first shard written."""

    def __init__(self):
        super().__init__()
        self.at: float | None = None

    def emit(self, record):
        if self.at is None and "first shard written" in record.getMessage():
            self.at = time.time()


def run_synth(argv: list[str], max_num_seqs: int, request_s: float, cpus: int, stats_path: str) -> dict[str, float]:
    """synth (`argv`: its flags, backend vllm) with the fake engine on a fresh local Ray of `cpus` logical CPUs:
    the in-flight counts, when the first shard reached the driver, shard files' times and the wall time."""
    import ray

    from pipelines.synth import parse_args, synthesize

    install()
    # address="local": a new Ray, never one that a `ray start` (another test, another user) left on this machine
    ray.init(
        address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False
    )
    first = _FirstShard()
    synth_log = logging.getLogger("pipelines.synth")
    synth_log.addHandler(first)
    synth_log.setLevel(logging.INFO)
    cfg = parse_args(argv)
    cfg.engine_kwargs = {"max_num_seqs": max_num_seqs, "fake_request_s": request_s, "fake_stats_path": stats_path}
    t0 = time.time()
    try:
        out_dir = synthesize(cfg)
    finally:
        ray.shutdown()
        synth_log.removeHandler(first)
    shards = sorted((out_dir / "traces").glob("*.parquet"))
    written = sorted(f.stat().st_mtime - t0 for f in shards)
    # each shard's rows, the shards in any order (`source` names the prompts folder, a temporary one in benchmarks)
    content = hashlib.sha256()
    for digest in sorted(
        hashlib.sha256(pq.read_table(f).drop(["source"]).to_pandas().to_json().encode()).digest() for f in shards
    ):
        content.update(digest)
    return in_flight_stats(stats_path, t_start=t0) | {
        "traces_sha256": content.hexdigest()[:16],
        "wall_s": time.time() - t0,
        "first_shard_s": first.at - t0 if first.at else None,
        "shard_files": len(written),
        "first_shard_file_s": written[0],
        "last_shard_file_s": written[-1],
    }


def synth_argv(prompts, model, output_dir, samples: int, batch_size: int, shard_rows: int) -> list[str]:
    """`nanoforge synth` arguments for the vllm backend with 16 new tokens per sample (the fake engine's answers)."""
    argv = ["--prompts_path", str(prompts), "--backend", "vllm", "--model_name_or_path", str(model)]
    argv += ["--num_samples", str(samples), "--max_new_tokens", "16", "--batch_size", str(batch_size)]
    return [*argv, "--shard_rows", str(shard_rows), "--output_dir", str(output_dir)]


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of one fake-engine synth run (here and in benchmarks/synth_inflight.py)."""
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shard-rows", type=int, default=256)
    p.add_argument("--max-num-seqs", type=int, default=512, help="requests the fake engine runs at once")
    p.add_argument("--request-s", type=float, default=2.0, help="seconds each fake request runs")
    p.add_argument("--cpus", type=int, default=8, help="logical CPUs of the local Ray (the H200 host had 16)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompts")
    p.add_argument("model")
    p.add_argument("output_dir")
    add_run_options(p)
    args = p.parse_args(argv)
    argv = synth_argv(args.prompts, args.model, args.output_dir, args.samples, args.batch_size, args.shard_rows)
    stats = run_synth(argv, args.max_num_seqs, args.request_s, args.cpus, f"{args.output_dir}.engine.json")
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
