"""The synth stage's time before generation (issue 16 item 1), on CPU: a fresh `nanoforge synth` process per run,
its log lines timed from the moment the process starts.

    python -m benchmarks.synth_startup [--code DIR] [--runs 3] [--prompts 64] [--vllm-path DIR] [--backends vllm]

Two runs per repeat, interleaved: the transformers backend (tiny NemotronH base from `sft.init_base`, 2 samples,
8 new tokens) to the first shard written, and the vllm backend to "pipeline built" (the driver's own work before
the stream starts: `ray.data.llm.build_processor` imports torch and transformers in the driver and waits for a
telemetry actor; vLLM itself is not needed for that and the run is stopped there). `--code DIR` runs another
checkout (e.g. `git archive <commit> pipelines sft | tar -x -C DIR`) to compare before and after. `--vllm-path`
puts a folder where vLLM's Python package imports (its source and pure-Python dependencies: on CPU it imports, it
cannot run) on the path, so that the driver imports vLLM as it does on a GPU host.
Results: benchmarks/RESULTS.md ("synth: start-up on CPU").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NANOFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))
GSM8K_TEST = DATA / "gsm8k" / "test.jsonl"
MARKS = {
    "ray": r"\[synth\] Ray ready",
    "read": r"\[synth\] \d+ prompts read and prepared",  # before streaming only
    "built": r"\[synth\] \w+ pipeline built",
    "first_shard": r"\[synth\] first shard written",
}


def timeline(code: Path, argv: list[str], stop_at: str | None, extra_path: str = "") -> dict[str, float]:
    """Seconds from process start to each log mark (and `end`), read off the stderr lines as they arrive."""
    path = os.pathsep.join(p for p in (str(code), extra_path) if p)
    env = os.environ | {"PYTHONPATH": path, "NANOFORGE_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "synth", *argv],
        cwd=code,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    marks: dict[str, float] = {}
    for line in proc.stderr:
        for name, pattern in MARKS.items():
            if name not in marks and re.search(pattern, line):
                marks[name] = time.perf_counter() - start
        if stop_at and stop_at in marks:
            proc.kill()
            break
    proc.wait()
    marks["end"] = time.perf_counter() - start
    return marks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=REPO, help="checkout to run (default: this one)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--vllm-path", default="", help="folder(s) where `import vllm` works, added to PYTHONPATH")
    parser.add_argument("--backends", nargs="+", default=["transformers", "vllm"], choices=["transformers", "vllm"])
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from sft.init_base import build_base

    work = Path(tempfile.mkdtemp(prefix="synth_startup_"))
    model = build_base(work / "base", preset="tiny", seed=0)
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(GSM8K_TEST.read_text().splitlines(keepends=True)[: args.prompts]))
    common = ["--prompts_path", str(prompts), "--model_name_or_path", str(model), "--num_samples", "2"]
    common += ["--max_new_tokens", "8", "--batch_size", "8", "--shard_rows", "8"]
    results: dict[str, list[dict]] = {backend: [] for backend in args.backends}
    for i in range(args.runs):
        for backend in results:
            out = ["--output_dir", str(work / f"out-{backend}-{i}")]
            stop_at = "built" if backend == "vllm" else None
            marks = timeline(args.code, [*common, "--backend", backend, *out], stop_at, args.vllm_path)
            results[backend].append(marks)
            print(backend, json.dumps({k: round(v, 1) for k, v in marks.items()}), flush=True)
    for backend, runs in results.items():
        medians = {k: round(statistics.median(r[k] for r in runs if k in r), 1) for k in runs[0]}
        print(f"median {backend} ({args.code}): {json.dumps(medians)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
