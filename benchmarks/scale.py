"""Scale: curate (FineWeb steps + fuzzy dedup) -> quality -> mix on a Ray cluster of 1 or 2 simulated nodes.

    python -m benchmarks.scale --target_mb 200 --nodes 1 2      # the issue's size (~1 h on 2 quiet cores)
    python -m benchmarks.scale --target_mb 20 --nodes 1 2       # a quicker run

Input: the replicated real web text of benchmarks/curate.py (`build_input`, 8 JSONL.gz shards). The cluster is
`ray.cluster_utils.Cluster` started by the measured process: one node with all CPUs, or two nodes splitting them
(separate raylets and object stores; the nodes share this machine's disk, so artifacts go to local disk here; the
tests run the same stages with artifacts on an S3 server). The quality classifier is trained once beforehand
(fastText on GSM8K solutions vs the input's web text) and is not timed.

Measured per run: wall seconds per stage and in all, MB/s per core (input text MB / wall / CPUs), the DRIVER's
peak RSS (the measured Python process alone: what must stay flat as the corpus grows) and the whole process
tree's, the files each artifact holds and the temporary files each stage wrote and removed (staging, checkpoints).
Results go to benchmarks/results/scale-<MB>mb.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = HERE / "data" / "scale"
MIX_YAML = """# three quality tiers in two phases, estimated tokens (no tokenizer)
# python -m benchmarks.scale
sources:
  - {name: high, input: 0, labels: [High, Medium-High]}
  - {name: medium, input: 0, labels: [Medium]}
  - {name: low, input: 0, labels: [Medium-Low, Low], max_epochs: 1}
phases:
  - {name: phase1, fraction: 0.7, weights: {high: 0.2, medium: 0.4, low: 0.4}}
  - {name: phase2, fraction: 0.3, weights: {high: 0.6, medium: 0.3, low: 0.1}}
total_tokens: TOTAL
on_shortfall: report
docs_per_shard: 20000
"""


def stages(input_dir: Path, out: Path, classifier: Path, total_tokens: int) -> list[tuple[str, str, list[str]]]:
    (out / "mix.yaml").write_text(MIX_YAML.replace("TOTAL", str(total_tokens)))
    return [
        (
            "curate",
            "pipelines.curate",
            [
                "--config",
                "pipelines/configs/curate_fineweb.yaml",
                "--input_paths",
                str(input_dir),
                "--output_dir",
                str(out / "curate"),
                "--force",
                "true",
            ],
        ),
        (
            "quality",
            "pipelines.quality",
            [
                "--input_path",
                str(out / "curate"),
                "--classifiers",
                str(classifier),
                "--output_dir",
                str(out / "quality"),
                "--threshold_sample_fraction",
                "0.1",
                "--force",
                "true",
            ],
        ),
        (
            "mix",
            "pipelines.mix",
            [
                "--config",
                str(out / "mix.yaml"),
                "--input_paths",
                str(out / "quality"),
                "--output_dir",
                str(out / "mix"),
                "--force",
                "true",
            ],
        ),
    ]


def inner(args) -> int:
    """The measured process: start the cluster, run the stages in this process (the driver), report timings."""
    import importlib

    import ray
    from ray.cluster_utils import Cluster

    from pipelines.core import storage
    from pipelines.core.runtime import init_ray

    nodes = args.nodes[0]
    node = {"num_cpus": args.cpus // nodes, "temp_dir": tempfile.mkdtemp(prefix="nfs-", dir="/tmp")}  # not /tmp/ray
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    init_ray(cluster.address)
    # Temporary files (staging, checkpoints) are gone when a stage ends: count what the driver removes from a
    # partial directory, the stages' only way to delete their work files.
    temporary, remove = {"n": 0}, storage.remove

    def counting_remove(path):
        if ".partial" in str(path):
            temporary["n"] += storage.count_files(path)
        remove(path)

    storage.remove = counting_remove
    seconds, temporary_files = {}, {}
    try:
        for name, module, argv in stages(Path(args.input), Path(args.out), Path(args.classifier), args.total_tokens):
            start, temporary["n"] = time.monotonic(), 0
            importlib.import_module(module).main(argv)
            seconds[name] = round(time.monotonic() - start, 1)
            temporary_files[name] = temporary["n"]
    finally:
        storage.remove = remove
        ray.shutdown()
        cluster.shutdown()
    Path(args.out, "seconds.json").write_text(json.dumps(seconds))
    Path(args.out, "temporary_files.json").write_text(json.dumps(temporary_files))
    return 0


def measure(cmd: list[str], env: dict) -> dict:
    """Wall seconds; peak RSS of the driver process alone and of its whole tree (raylets, workers, stores)."""
    import psutil

    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    peak = {"driver": 0, "tree": 0}
    done = threading.Event()

    def sample():
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                driver = root.memory_info().rss
                tree = driver + sum(p.memory_info().rss for p in root.children(recursive=True) if p.is_running())
                peak["driver"], peak["tree"] = max(peak["driver"], driver), max(peak["tree"], tree)
            except psutil.Error:
                pass
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    code = proc.wait()
    done.set()
    thread.join()
    return {
        "wall": round(time.monotonic() - start, 1),
        "driver_rss": peak["driver"],
        "tree_rss": peak["tree"],
        "code": code,
    }


def train_classifier(input_dir: Path, out: Path) -> Path:
    from benchmarks.curate import SHARED
    from pipelines import train_quality_classifier as quality_classifier

    if not (out / "manifest.json").exists():
        quality_classifier.main(
            [
                "--config",
                "pipelines/configs/train_quality_classifier_demo.yaml",
                "--positive_paths",
                str(SHARED / "gsm8k" / "train.jsonl"),
                "--negative_paths",
                str(input_dir / "shard-000.jsonl.gz"),
                "--output_dir",
                str(out),
            ]
        )
    return out


def count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target_mb", type=int, default=200)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs in all, split over the nodes")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--classifier", help=argparse.SUPPRESS)
    parser.add_argument("--total_tokens", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        return inner(args)

    from benchmarks.curate import build_input

    input_dir = build_input(args.target_mb)
    text_mb = json.loads((input_dir / "DONE").read_text())["text_bytes"] / 1e6
    classifier = train_classifier(input_dir, DATA / "classifier")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"NANOFORGE_PROGRESS": "0"}
    results = []
    for nodes in args.nodes:
        out = DATA / f"run-{args.target_mb}mb-{nodes}n"
        out.mkdir(parents=True, exist_ok=True)
        load = os.getloadavg()[0]
        tokens = int(text_mb * 1e6 / 4 * 0.3)  # ~30% of the input's estimated tokens
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.scale",
            "--inner",
            "--cpus",
            str(args.cpus),
            "--nodes",
            str(nodes),
            "--input",
            str(input_dir),
            "--out",
            str(out),
            "--classifier",
            str(classifier),
            "--total_tokens",
            str(tokens),
        ]
        m = measure(cmd, env)
        row = {
            "target_mb": args.target_mb,
            "text_mb": round(text_mb, 1),
            "nodes": nodes,
            "cpus": args.cpus,
            "load_at_start": round(load, 1),
            **m,
        }
        if m["code"] == 0:
            row["seconds"] = json.loads((out / "seconds.json").read_text())
            row["mb_per_s_per_core"] = round(text_mb / m["wall"] / args.cpus, 4)
            row["files"] = {name: count_files(out / name) for name in ("curate", "quality", "mix")}
            row["temporary_files"] = json.loads((out / "temporary_files.json").read_text())
        results.append(row)
        print(json.dumps(row), flush=True)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"scale-{args.target_mb}mb.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
