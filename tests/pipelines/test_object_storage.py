"""Stages with every input and artifact on a real S3 server (moto on loopback): the same documents as on local
disk, the manifest written last, no work files left, no credential in anything written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datapaths import shared_data

from pipelines import curate
from pipelines.core import storage
from pipelines.core.artifacts import read_manifest

REPO = Path(__file__).resolve().parents[2]
DEMO_YAML = str(REPO / "pipelines" / "configs" / "curate_demo.yaml")


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    from pipelines import demo_data

    out = tmp_path_factory.mktemp("demo") / "demo_data"
    demo_data.main(
        [
            "--output_dir",
            str(out),
            "--num_pages",
            "120",
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
            "1",
            "--num_test_problems",
            "3",
            "--num_contaminated_pages",
            "3",
        ]
    )
    return out


def upload(local: Path, url: str) -> None:
    fs, path = storage.filesystem(url)
    fs.put(str(local), path, recursive=True)


def all_objects(prefix: str) -> dict[str, bytes]:
    fs, path = storage.filesystem(prefix)
    return {f[len(path) + 1 :]: fs.cat_file(f) for f in fs.find(path)}


def local_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_curate_on_s3_gives_the_same_documents_as_local_disk(ray_local, small_corpus, s3_prefix, tmp_path):
    """Input, evaluation set and artifact on s3://: the same documents/, rejected/ and counts as a local run
    (fuzzy dedup and decontamination on), the LSH index on S3, the manifest last, nothing of .work left."""
    upload(small_corpus / "web", storage.join(s3_prefix, "in", "web"))
    upload(small_corpus / "math" / "test.jsonl", storage.join(s3_prefix, "in", "test.jsonl"))
    remote_out = storage.join(s3_prefix, "curate")
    remote = [
        "--input_paths",
        storage.join(s3_prefix, "in", "web"),
        "--decontaminate_against",
        f"demo_test={storage.join(s3_prefix, 'in', 'test.jsonl')}:question",
    ]
    local = [
        "--input_paths",
        str(small_corpus / "web"),
        "--decontaminate_against",
        f"demo_test={small_corpus / 'math' / 'test.jsonl'}:question",
    ]
    curate.main(["--config", DEMO_YAML, *remote, "--output_dir", remote_out, "--num_workers", "2"])
    curate.main(["--config", DEMO_YAML, *local, "--output_dir", str(tmp_path / "curate"), "--num_workers", "2"])

    on_s3, on_disk = all_objects(remote_out), local_files(tmp_path / "curate")
    for folder in ("documents/", "rejected/"):  # byte for byte
        assert {k: v for k, v in on_s3.items() if k.startswith(folder)} == {
            k: v for k, v in on_disk.items() if k.startswith(folder)
        }
    # quarantine rows name their input file, an s3:// URL here: the same rows otherwise
    quarantined = [
        storage.read_table(f).to_pylist()
        for f in (
            storage.join(remote_out, "quarantine", "part-00000.parquet"),
            str(tmp_path / "curate" / "quarantine" / "part-00000.parquet"),
        )
    ]

    def by_name(r: dict) -> dict:
        return {
            **r,
            "file": storage.basename(r["file"]),
            "error": r["error"].replace(r["file"], storage.basename(r["file"])),
        }

    assert [by_name(r) for r in quarantined[0]] == [by_name(r) for r in quarantined[1]]
    assert quarantined[0] and quarantined[0][0]["file"].startswith("s3://")
    assert any(k.startswith("documents/") for k in on_s3)
    manifest, local_manifest = read_manifest(remote_out), read_manifest(tmp_path / "curate")
    assert manifest["counts"] == local_manifest["counts"]
    assert (
        manifest["counts"]["rejected"]["contaminated:demo_test"] == 3
        and manifest["counts"]["rejected"]["fuzzy_duplicate"] > 0
    )
    assert manifest["resumed"]["chunks"] == manifest["resumed"]["chunks_processed"] >= 1
    assert any(k.startswith("lsh_index/buckets/") for k in on_s3) and any(
        k.startswith("lsh_index/ids/") for k in on_s3
    )
    assert not any(k.startswith(".work/") or k == ".lineage.json" for k in on_s3)
    secret = os.environ["AWS_SECRET_ACCESS_KEY"].encode()
    assert not any(secret in v for v in on_s3.values())  # manifest, stats, report, data: no credential

    # a rerun is a no-op (the committed manifest matches); a prefix without a manifest is absent
    curate.main(["--config", DEMO_YAML, *remote, "--output_dir", remote_out])
    assert read_manifest(remote_out)["created_at"] == manifest["created_at"]
    storage.remove(storage.join(remote_out, "manifest.json"))
    assert read_manifest(remote_out) is None


@pytest.mark.slow
def test_synth_and_select_on_s3_give_the_same_traces_and_sets_as_local_disk(ray_local, s3_prefix, tmp_path):
    """Prompts on s3:// in, traces on s3:// out, then the three sets on s3:// out: the same files, byte for byte,
    as a local run (replay backend); reports and manifests written by the stages, nothing staged left behind; and
    publish previews the traces artifact from s3:// as from local disk."""
    from pipelines.select import parse_args as select_args
    from pipelines.select import select
    from pipelines.synth import parse_args as synth_args
    from pipelines.synth import synthesize

    prompts = tmp_path / "gsm8k" / "train.jsonl"
    prompts.parent.mkdir()
    lines = shared_data("gsm8k", "train.jsonl").read_text().splitlines()[:24]
    prompts.write_text("\n".join([*lines, lines[0]]) + "\n")  # and a duplicate, rejected with its reason
    upload(prompts, storage.join(s3_prefix, "in", "gsm8k", "train.jsonl"))
    remote_traces = storage.join(s3_prefix, "traces")
    synth = ["--backend", "replay", "--shard_rows", "10", "--source", "gsm8k/train"]  # the folder is found below
    synthesize(synth_args([*synth, "--prompts_path", storage.join(s3_prefix, "in"), "--output_dir", remote_traces]))
    traces = synthesize(synth_args([*synth, "--prompts_path", str(prompts), "--output_dir", str(tmp_path / "t")]))
    on_s3, on_disk = all_objects(remote_traces), local_files(traces)
    data = [k for k in on_disk if k.endswith(".parquet")]
    assert len([k for k in data if k.startswith("traces/")]) == 3 and any(k.startswith("rejected/") for k in data)
    assert {k for k in on_s3 if k.endswith(".parquet")} == set(data) and all(on_s3[k] == on_disk[k] for k in data)
    assert read_manifest(remote_traces)["counts"] == read_manifest(traces)["counts"]

    # publish reads an artifact on s3:// too: the same data files in its preview as from the local artifact
    from pipelines import publish

    for src, out in ((remote_traces, "preview_s3"), (str(traces), "preview_local")):
        publish.main([src, "--repo_id", "me/traces", "--dry_run", str(tmp_path / out)])
    previews = [local_files(tmp_path / out) for out in ("preview_s3", "preview_local")]
    assert {k: v for k, v in previews[0].items() if k.endswith(".parquet")} == {
        k: v for k, v in previews[1].items() if k.endswith(".parquet")
    }
    assert "README.md" in previews[0] and len([k for k in previews[0] if k.startswith("traces/")]) == 3

    remote_out = storage.join(s3_prefix, "select")
    # the no_think / budget variants are drawn by the traces artifact's hash, not by where it is stored
    options = ["--no_think_ratio", "0.3", "--budget_ratio", "0.3"]
    select(select_args(["--traces_path", remote_traces, "--output_dir", remote_out, *options]))
    select(select_args(["--traces_path", str(traces), "--output_dir", str(tmp_path / "select"), *options]))

    on_s3, on_disk = all_objects(remote_out), local_files(tmp_path / "select")
    folders = {k.rsplit("/", 1)[0] for k in on_disk if k.endswith(".parquet")}
    assert {k.rsplit("/", 1)[0] for k in on_s3 if k.endswith(".parquet")} == folders and len(folders) >= 3

    def rows(objects: dict[str, bytes], folder: str) -> list[dict]:
        mine = [v for k, v in objects.items() if k.rsplit("/", 1)[0] == folder and k.endswith(".parquet")]
        tables = [pq.read_table(pa.BufferReader(v)) for v in mine]
        table = pa.concat_tables(tables)  # the `traces` column names the input: an s3:// URL or a local path
        return table.drop_columns([c for c in ("traces",) if c in table.column_names]).to_pylist()

    for folder in folders:  # the same rows in the same order (the sft set's `traces` column aside)
        assert rows(on_s3, folder) == rows(on_disk, folder), folder
    assert {r["variant"] for r in rows(on_disk, "sft")} > {"full"}  # variants were drawn, the same ones on both
    same = [k for k in on_disk if k.endswith(".parquet") and not k.startswith("sft/")]
    assert same and all(on_s3[k] == on_disk[k] for k in same)  # byte for byte where no row names its input
    for name in ("", "sft", "preference", "rl_prompts"):
        assert (
            read_manifest(storage.join(remote_out, name))["counts"]
            == read_manifest(tmp_path / "select" / name)["counts"]
        )
    assert "Pass rate per prompt" in storage.read_text(storage.join(remote_out, "report.md"))
    assert not any(k.startswith(".staged/") or k.endswith(".lineage.json") for k in on_s3)


@pytest.mark.slow
def test_rephrase_on_s3_gives_the_same_documents_as_local_disk(ray_local, s3_prefix, tmp_path):
    """A documents artifact on s3:// in, synthetic documents on s3:// out (replay backend): the same documents/
    and counts as a local run, the prompts and card written, no .work/ pieces left."""
    from pipelines.rephrase import parse_args, rephrase
    from tests.pipelines.test_rephrase import HIGH_TASKS, labelled_documents, wiki_articles

    quality, docs = labelled_documents(tmp_path, n_c4=6)
    units = [
        (d["id"], t)
        for d in docs
        for t in (HIGH_TASKS if d["quality_label"] == "High" else ["wikipedia_rephrase"])
        if d["quality_label"] != "Medium"
    ]
    articles = wiki_articles()
    replay = tmp_path / "replay.jsonl"
    replay.write_text(
        "".join(
            json.dumps({"source_id": s, "task": t, "text": articles[2 + i % 20][:1500]}) + "\n"
            for i, (s, t) in enumerate(units)
        )
    )
    upload(quality, storage.join(s3_prefix, "quality"))
    remote_out = storage.join(s3_prefix, "rephrase")
    common = ["--backend", "replay", "--replay_path", str(replay), "--shard_rows", "2"]
    rephrase(parse_args(["--input_path", storage.join(s3_prefix, "quality"), "--output_dir", remote_out, *common]))
    local = rephrase(parse_args(["--input_path", str(quality), "--output_dir", str(tmp_path / "rephrase"), *common]))

    on_s3, on_disk = all_objects(remote_out), local_files(local)
    data = [k for k in on_disk if k.endswith(".parquet")]
    assert any(k.startswith("documents/") for k in data)
    assert {k for k in on_s3 if k.endswith(".parquet")} == set(data) and all(on_s3[k] == on_disk[k] for k in data)
    assert read_manifest(remote_out)["counts"] == read_manifest(local)["counts"]
    assert any(k.startswith("prompts/") for k in on_s3) and "README.md" in on_s3
    assert not any(k.startswith(".work/") for k in on_s3)
