"""Run every CPU benchmark, then gather their tables into benchmarks/RESULTS.md.

    make bench                                   # all of them (tens of minutes on 2 cores)
    python -m benchmarks.run_all --only curate dedup
    python -m benchmarks.run_all --collect-only  # just rebuild RESULTS.md from benchmarks/results/*.md

Each benchmark is `python -m benchmarks.<name>`, compares nanoforge with the tool a user would pick instead in
one process run, and writes its table to benchmarks/results/<name>.md. GPU measurements (benchmarks/gpu/) run on
a lent GPU machine and are gathered here from their results file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CPU_BENCHMARKS = ["curate", "dedup", "mix", "synth", "sft"]
ORDER = [*CPU_BENCHMARKS, "gpu"]


def collect() -> Path:
    parts = [
        "# Benchmark results\n",
        "Each table compares nanoforge with the alternative a user would reach for, measured side by side in one",
        "process run; each section gives the command that reproduces it. Ratios are the figures to compare: the",
        "dev machine has 2 cores and is shared, so absolute timings move between runs.\n",
    ]
    results = HERE / "results"
    names = sorted(results.glob("*.md"), key=lambda p: ORDER.index(p.stem) if p.stem in ORDER else len(ORDER))
    for path in names:
        parts.append(path.read_text().strip() + "\n")
    out = HERE / "RESULTS.md"
    out.write_text("\n".join(parts))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=CPU_BENCHMARKS, help="benchmarks to run")
    parser.add_argument("--collect-only", action="store_true", help="only rebuild RESULTS.md")
    args = parser.parse_args()
    failed = []
    if not args.collect_only:
        for name in args.only:
            print(f"=== benchmarks.{name}", flush=True)
            if subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], cwd=HERE.parent).returncode:
                failed.append(name)
    print(f"wrote {collect()}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
