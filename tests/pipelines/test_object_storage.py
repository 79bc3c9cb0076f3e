"""Stages with every input and artifact on a real S3 server (moto on loopback): the same documents as on local
disk, the manifest written last, no work files left, no credential in anything written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
