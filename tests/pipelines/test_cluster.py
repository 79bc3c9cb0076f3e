"""A multi-node Ray cluster on this machine (ray.cluster_utils.Cluster: a head and a worker node, 1 CPU each),
every artifact on the S3 server: curate -> quality -> mix complete with exact accounting, and the accounting
cross-checks the plan (a checkpoint the driver cannot see is an error, not a balanced manifest)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from pipelines import curate, mix, quality
from pipelines import train_quality_classifier as quality_classifier
from pipelines.core import storage
from pipelines.core.artifacts import read_manifest

REPO = Path(__file__).resolve().parents[2]
DEMO_YAML = str(REPO / "pipelines" / "configs" / "curate_demo.yaml")
MIX_YAML = """# a two-phase blend of the quality buckets, estimated tokens
# nanoforge mix --config mix.yaml
sources:
  - {name: high, input: 0, labels: [High, Medium-High, Medium]}
  - {name: low, input: 0, labels: [Medium-Low, Low]}
phases:
  - {name: phase1, fraction: 0.5, weights: {high: 0.5, low: 0.5}}
  - {name: phase2, fraction: 0.5, weights: {high: 0.8, low: 0.2}}
total_tokens: 20000
on_shortfall: report
docs_per_shard: 50
"""


@pytest.fixture
def two_nodes():
    """A Ray head and one worker node as separate raylets (1 CPU each); the driver attaches to the head."""
    import ray
    from ray.cluster_utils import Cluster

    from pipelines.core.runtime import init_ray

    was_running = ray.is_initialized()
    ray.shutdown()
    # its own temp dir: a cluster in /tmp/ray would be joined by every plain ray.init() on this machine
    small = {
        "num_cpus": 1,
        "object_store_memory": 120 * 1024**2,
        "temp_dir": tempfile.mkdtemp(prefix="nfc-", dir="/tmp"),
    }
    cluster = Cluster(initialize_head=True, head_node_args={**small, "include_dashboard": False})
    cluster.add_node(**small)
    try:
        cluster.wait_for_nodes()
        init_ray(cluster.address)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        if was_running:  # give the rest of the session its embedded Ray back
            init_ray(num_cpus=2)


@pytest.mark.slow
def test_curate_quality_mix_on_two_nodes_with_artifacts_on_s3(two_nodes, s3_prefix, tmp_path):
    from pipelines import demo_data

    corpus = tmp_path / "demo_data"
    demo_data.main(
        [
            "--output_dir",
            str(corpus),
            "--num_pages",
            "150",
            "--num_pii_pages",
            "4",
            "--num_exact_duplicates",
            "10",
            "--num_near_duplicates",
            "8",
            "--num_spam_pages",
            "10",
            "--num_non_english_pages",
            "4",
            "--num_train_problems",
            "40",
            "--num_test_problems",
            "3",
            "--num_contaminated_pages",
            "3",
        ]
    )
    fs, root = storage.filesystem(s3_prefix)
    fs.put(str(corpus / "web"), f"{root}/in/web", recursive=True)
    cur, qual, blend = (storage.join(s3_prefix, name) for name in ("curate", "quality", "mix"))

    curate.main(
        ["--config", DEMO_YAML, "--input_paths", f"{s3_prefix}/in/web", "--output_dir", cur, "--chunk_bytes", "40000"]
    )
    manifest = read_manifest(cur)
    counts, resumed = manifest["counts"], manifest["resumed"]
    assert counts["input"] == counts["kept"] + sum(counts["rejected"].values()) + counts["quarantined"]
    assert resumed["chunks"] == resumed["chunks_processed"] + resumed["chunks_reused"] > 2
    docs = storage.glob(storage.join(cur, "documents", "*.parquet"))
    assert sum(storage.parquet_metadata(f).num_rows for f in docs) == counts["kept"]  # footers = manifest

    classifier = tmp_path / "classifier"  # a model file on the one disk both nodes share (see the report)
    quality_classifier.main(
        [
            "--config",
            str(REPO / "pipelines/configs/train_quality_classifier_demo.yaml"),
            "--positive_paths",
            str(corpus / "math" / "train.jsonl"),
            "--negative_paths",
            str(corpus / "web" / "*.jsonl.gz"),
            "--output_dir",
            str(classifier),
        ]
    )
    quality.main(["--input_path", cur, "--classifiers", str(classifier), "--output_dir", qual, "--num_workers", "1"])
    q = read_manifest(qual)["counts"]
    assert q["input"] == counts["kept"] == q["kept"] + sum(q["rejected"].values())
    assert storage.exists(storage.join(qual, "thresholds.json"))

    (tmp_path / "mix.yaml").write_text(MIX_YAML)
    mix.main(["--config", str(tmp_path / "mix.yaml"), "--input_paths", qual, "--output_dir", blend])
    m = read_manifest(blend)["counts"]
    assert m["input_docs"] == q["kept"]
    blend_json = json.loads(storage.read_text(storage.join(blend, "blend.json")))
    for name, phase in blend_json["phases"].items():
        rows = sum(storage.parquet_metadata(storage.join(blend, f)).num_rows for f in phase["shards"])
        assert rows == m["phases"][name]["docs"] > 0
    assert not storage.glob(storage.join(blend, ".work", "*"))


def test_accounting_that_misses_a_checkpoint_is_an_error():
    """A worker that wrote its chunk where the driver cannot see it (its own disk) shows up as a missing chunk."""
    curate.check_accounting({"chunks": 5, "chunks_processed": 5, "chunks_reused": 0, "rows": 10}, [{"input": 10}])
    with pytest.raises(RuntimeError, match="node-local disk"):
        curate.check_accounting({"chunks": 4, "chunks_processed": 5, "chunks_reused": 0, "rows": 10})
    with pytest.raises(RuntimeError, match="shards account for 9 records"):
        curate.check_accounting({"chunks": 5, "chunks_processed": 5, "chunks_reused": 0, "rows": 10}, [{"input": 9}])
