"""Every artifact is a Hugging Face repository as written: `datasets.load_dataset(path)` gives the manifest's kept
rows with the contract's columns (DESIGN.md), named configs give the dropped rows, TRL's own CLIs train on the SFT
and preference sets, and Megatron-Core reads the blend's token files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import artifact_factory as make
import numpy as np
import pyarrow as pa
import pytest
from huggingface_hub import ModelCard

from pipelines.core.artifacts import read_manifest

# kind -> (columns the contract promises, how many rows the manifest says the default config holds)
CONTRACT = {
    "documents": (["id", "text", "source", "url"], lambda c: c["kept"]),
    "quality": (["id", "text", "quality_bucket", "quality_label"], lambda c: c["kept"]),
    "traces": (["id", "prompt_id", "messages", "verified", "num_generated_tokens"], lambda c: c["generated"]),
    "sft": (["messages"], lambda c: c["kept"]),
    "preference": (["prompt", "chosen", "rejected"], lambda c: c["kept"]),
    "rl_prompts": (["prompt", "answer", "verifier"], lambda c: c["kept"]),
}
# kind -> (config of dropped rows, how many rows the manifest says it holds)
DROPPED = {
    "documents": lambda c: sum(c["rejected"].values()),
    "quality": lambda c: sum(c["rejected"].values()),
    "sft": lambda c: sum(c["rejected"].values()),
    "preference": lambda c: sum(c["unpaired"].values()),
    "rl_prompts": lambda c: sum(c["dropped"].values()),
}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    arts = make.all_kinds(root)
    arts["quality"] = make.quality(root, arts["documents"])
    return arts


def load(path: Path, config: str | None = None):
    import datasets

    loaded = datasets.load_dataset(str(path), config, cache_dir=str(path.parent / ".hf-cache"))
    return datasets.concatenate_datasets(list(loaded.values()))  # every split (the SFT set has train and test)


@pytest.mark.parametrize("kind", list(CONTRACT))
def test_load_dataset_gives_the_kept_rows_with_the_contract_columns(artifacts, kind):
    columns, kept = CONTRACT[kind]
    counts = read_manifest(artifacts[kind])["counts"]
    rows = load(artifacts[kind])
    assert rows.num_rows == kept(counts)
    assert set(columns) <= set(rows.column_names)
    assert "reason" not in rows.column_names  # no dropped row came along
    if kind in DROPPED:
        assert load(artifacts[kind], "rejected").num_rows == DROPPED[kind](counts)


def test_blend_phases_load_by_name_and_add_up(artifacts):
    blend = artifacts["blend"]
    phases = [load(blend, name).num_rows for name in ("phase1", "phase2")]
    assert load(blend).num_rows == phases[0] and sum(phases) == read_manifest(blend)["counts"]["documents"]


def test_megatron_core_reads_the_blend_token_files(artifacts):
    try:
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    except ImportError:
        pytest.skip("megatron-core is not installed (pip install megatron-core) : its IndexedDataset is not checked")
    data = IndexedDataset(str(artifacts["blend"] / "phase1" / "tokens"))
    assert [len(data[i]) for i in range(len(data))] == [3, 4, 5, 2, 2]
    assert np.concatenate([data[i] for i in range(len(data))]).tolist() == list(range(16))


def test_checkpoint_has_a_model_card(tiny_base):
    """init-base writes its checkpoint through Artifact: the card is a transformers model card."""
    card = ModelCard.load(tiny_base / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert read_manifest(tiny_base)["hash"] in card.text


def trl_cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    trl = shutil.which("trl", path=str(Path(sys.executable).parent)) or "trl"
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / ".hf-cache"), "CUDA_VISIBLE_DEVICES": ""}
    common = ["--max_steps", "2", "--per_device_train_batch_size", "2", "--report_to", "none", "--bf16", "false"]
    return subprocess.run([trl, *args, *common], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sft", "dpo"])
def test_trl_cli_trains_on_the_artifact_as_written(artifacts, tiny_base, tmp_path, command):
    """`trl sft|dpo --dataset_name <artifact>`: TRL's own scripts, no nanoforge code, read the card's configs."""
    dataset = artifacts["sft" if command == "sft" else "preference"]
    out = tmp_path / command
    args = [command, "--model_name_or_path", str(tiny_base), "--dataset_name", str(dataset), "--output_dir", str(out)]
    run = trl_cli(*args, "--save_strategy", "no", tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "'train_loss'" in run.stdout + run.stderr or "train_loss" in run.stdout + run.stderr


def test_an_artifact_on_object_storage_gets_the_same_card(tmp_path, s3_prefix):
    """On S3 the card goes up before the manifest (the commit marker), with the configs a local artifact gets."""
    import yaml

    from pipelines.core import storage
    from pipelines.core.artifacts import Artifact

    fronts = []
    for base in (str(tmp_path), s3_prefix):
        art = Artifact(storage.join(base, "rl_prompts"), kind="rl_prompts", stage="select", config={"k": 1})
        with art.writing() as out:
            row = {"prompt": [{"role": "user", "content": "2+2?"}], "answer": "4", "verifier": "math"}
            storage.write_parquet(pa.Table.from_pylist([row] * 3), storage.join(out, "part-00000.parquet"))
            rejected = pa.Table.from_pylist([row | {"reason": "pass_rate_1"}])
            storage.makedirs(storage.join(out, "rejected"))
            storage.write_parquet(rejected, storage.join(out, "rejected", "part-00000.parquet"))
            art.counts = {"input": 4, "kept": 3, "rejected": {"pass_rate_1": 1}}
        card = storage.read_text(storage.join(art.path, "README.md"))
        fronts.append(yaml.safe_load(card.split("---")[1]))
        assert read_manifest(art.path)["hash"] in card
    assert fronts[0]["configs"] == fronts[1]["configs"]
    assert {c["config_name"] for c in fronts[1]["configs"]} == {"default", "rejected"}


def test_a_container_of_sets_has_no_default_and_loads_each_set_by_name(tmp_path):
    """select's output holds three sets: `load_dataset(select, "sft")` is the SFT set; without a name, an error
    that lists the configs (never one set passed off as the whole)."""
    import datasets

    from pipelines.core.artifacts import Artifact

    art = Artifact(tmp_path / "select", kind="selection", stage="select", config={})
    with art.writing() as tmp:
        for name, n in (("sft", 3), ("rl_prompts", 2)):
            sub = Artifact(tmp / name, kind=name, stage="select", config={})
            with sub.writing() as sub_tmp:
                make.write_parquet(sub_tmp / "part-00000.parquet", [{"answer": str(i)} for i in range(n)])
                make.write_parquet(sub_tmp / "rejected" / "part-00000.parquet", [{"reason": "x"}])
    assert load(art.path, "sft").num_rows == 3 and load(art.path, "rl_prompts").num_rows == 2
    assert load(art.path / "sft").num_rows == 3  # each set is a dataset repo of its own too
    with pytest.raises(ValueError, match="sft"):
        datasets.load_dataset(str(art.path), cache_dir=str(tmp_path / ".hf-cache"))


def test_plain_load_dataset_reads_each_artifact_of_the_same_name_not_a_cached_one(tmp_path):
    """`datasets.load_dataset(<folder>)` (what `trl sft --dataset_name <folder>` calls) caches a folder by its name
    and the card's configs; the card gives each config the artifact's hash, so runs/a/sft, runs/b/sft and a rerun of
    runs/a/sft with another config are three cache entries, each with its own rows (the rows' count differs here)."""
    import datasets
    import pyarrow.parquet as pq

    from pipelines.core.artifacts import Artifact

    def write(run: str, texts: list[str], config: dict) -> Path:
        art = Artifact(tmp_path / run / "sft", kind="sft", stage="select", config=config)
        with art.writing() as tmp:
            turns = [[{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}] for t in texts]
            rows = [{"messages": m} for m in turns]
            pq.write_table(pa.Table.from_pylist(rows), tmp / "shard-0.parquet")
            (tmp / "rejected").mkdir()
            pq.write_table(pa.table({"id": [run], "reason": ["too_long"]}), tmp / "rejected" / "part-0.parquet")
        return art.path

    def firsts(path: Path, config: str | None = None) -> list[str]:
        ds = datasets.load_dataset(str(path), config, split="train", cache_dir=str(tmp_path / "cache"))
        return [m[0]["content"] for m in ds["messages"]] if "messages" in ds.column_names else ds["id"]

    a = write("a", ["a0", "a1"], {"run": "a"})
    b = write("b", ["b0", "b1"], {"run": "b"})  # the same number of rows: only the card can tell them apart
    assert firsts(a) == ["a0", "a1"] and firsts(b) == ["b0", "b1"]
    assert firsts(a, "rejected") == ["a"] and firsts(b, "rejected") == ["b"]
    a = write("a", ["c0", "c1"], {"run": "a", "changed": True})  # rerun with another config, at the same path
    assert firsts(a) == ["c0", "c1"]
