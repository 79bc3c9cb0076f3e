"""Batches and requests in flight in synth's vLLM stage, on CPU (issue 16 item 1): the real Ray Data plan of
`pipelines/synth.py` and ray.data.llm's real stages, with a fake engine (tests/fake_vllm.py) in place of vLLM that
runs `max_num_seqs` requests at once, each for `--request-s` seconds.

    python -m benchmarks.synth_inflight [--prompts 1024] [--samples 4] [--batch-size 64] [--max-num-seqs 512]
                                         [--request-s 2] [--cpus 8] [--before] [--files 1] [--no-order]
                                         [--async-batches N] [--max-tasks-in-flight N]

Prints the max and time-averaged batches and requests in the engine, when the engine started and the first shard
reached the driver (seconds from the stage's start), and the wall time. `--before` runs the plan as it was before
`backends.batch_blocks`; the other flags vary one Ray Data setting. Results: benchmarks/RESULTS.md ("synth:
batches in flight in the vLLM stage").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import fake_vllm  # noqa: E402  (tests/fake_vllm.py: the fake engine and its run options)

DATA = Path(os.environ.get("NANOFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))


def run(args) -> dict:
    import ray

    import pipelines.reasoning.backends as backends
    import pipelines.synth as synth
    from sft.init_base import build_base

    base = build_base(Path(tempfile.gettempdir()) / "nanoforge-inflight-base", preset="tiny", seed=0)
    work = Path(tempfile.mkdtemp(prefix="synth-inflight-"))
    lines = (DATA / "gsm8k" / "train.jsonl").read_text().splitlines()[: args.prompts]
    prompts = work / "prompts"
    prompts.mkdir()
    per_file = -(-len(lines) // args.files)
    for i in range(args.files):
        (prompts / f"{i:03d}.jsonl").write_text("".join(f"{x}\n" for x in lines[i * per_file : (i + 1) * per_file]))
    if args.before:  # the samples reach ray.data.llm in the planner's output blocks (one per prompts file)
        backends.batch_blocks = lambda ds, batch_size: ds
    if args.no_order:  # Ray Data free to reorder (the stage's shards would then differ from run to run)
        synth.ordered = lambda files: contextlib.nullcontext()
    if args.async_batches:  # read when Ray Data's workers import it: they inherit this environment
        os.environ["RAY_DATA_DEFAULT_ASYNC_BATCH_UDF_MAX_CONCURRENCY"] = str(args.async_batches)
    if args.max_tasks_in_flight:
        ray.data.DataContext.get_current().max_tasks_in_flight_per_actor = args.max_tasks_in_flight
    argv = fake_vllm.synth_argv(prompts, base, work / "traces", args.samples, args.batch_size, args.shard_rows)
    return fake_vllm.run_synth(argv, args.max_num_seqs, args.request_s, args.cpus, str(work / "engine.json"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=1024)
    fake_vllm.add_run_options(p)
    p.add_argument("--files", type=int, default=1, help="prompt files (one read block each)")
    p.add_argument("--before", action="store_true", help="without backends.batch_blocks (the plan before the fix)")
    p.add_argument("--no-order", action="store_true", help="preserve_order off")
    p.add_argument("--async-batches", type=int, help="RAY_DATA_DEFAULT_ASYNC_BATCH_UDF_MAX_CONCURRENCY (4)")
    p.add_argument("--max-tasks-in-flight", type=int, help="DataContext.max_tasks_in_flight_per_actor")
    args = p.parse_args(argv)
    out = run(args)
    print(" ".join(argv if argv is not None else sys.argv[1:]) or "(defaults)")
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
