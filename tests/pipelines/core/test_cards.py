"""Cards for every artifact kind: valid Hub metadata, and the real counts, lineage and settings from the manifest."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
from artifact_factory import SECRETS, all_kinds, documents
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

from pipelines.core.artifacts import read_manifest
from pipelines.core.cards import KINDS, card_kind, render_card, size_category
from pipelines.core.config import ConfigError


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return all_kinds(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def cards(artifacts):
    return {k: render_card(p, repo_id="nano/x", revision="nf-test", secrets=SECRETS) for k, p in artifacts.items()}


def rows_of(card: str) -> set[tuple[str, ...]]:
    """Every markdown table row of a card as a tuple of stripped cells (backticks removed)."""
    return {
        tuple(c.strip().strip("`") for c in line.strip()[1:-1].split("|"))
        for line in card.splitlines()
        if line.startswith("|")
    }


def _expand(root, path):
    return sorted(root.glob(path)) if isinstance(path, str) else [root / p for p in path]


def test_every_kind_has_a_template(artifacts):
    assert set(artifacts) == set(KINDS)


@pytest.mark.parametrize("kind", list(KINDS))
def test_front_matter_is_valid_hub_metadata(cards, artifacts, kind):
    kc = card_kind(kind)
    if kc.repo_type == "model":
        data = ModelCard(cards[kind]).data
        assert isinstance(data, ModelCardData)
        assert data.library_name == "transformers" and data.pipeline_tag == "text-generation"
        assert data.base_model == read_manifest(artifacts[kind])["config"]["model_name_or_path"]
        return
    data = DatasetCard(cards[kind]).data
    assert isinstance(data, DatasetCardData)
    assert data.license == "other" and data.language == ["en"]
    assert data.task_categories == list(kc.task_categories)
    configs = MetadataConfigs.from_dataset_card_data(data)  # raises on data_files the datasets library can't read
    default = configs.get_default_config_name()
    assert default in configs and default not in ("rejected", "quarantine")
    # Every Parquet shard is in exactly one config; the size category counts the default config's rows.
    declared = {
        name: [f for d in c["data_files"] for f in _expand(artifacts[kind], d["path"])] for name, c in configs.items()
    }
    shards = sorted(artifacts[kind].rglob("*.parquet"))
    assert sorted(f for files in declared.values() for f in files) == shards
    n = sum(pq.ParquetFile(f).metadata.num_rows for f in declared[default])
    assert data.size_categories == [size_category(n)]


@pytest.mark.parametrize("kind", list(KINDS))
def test_body_carries_the_manifest(cards, artifacts, kind):
    card, manifest = cards[kind], read_manifest(artifacts[kind])
    for field in ("hash", "config_hash", "code_version", "stage"):
        assert manifest[field] in card
    table = rows_of(card)
    for key, value in manifest["counts"].items():
        if isinstance(value, dict):  # a breakdown: one row per reason with its real count
            assert {(reason, str(n)) for reason, n in value.items()} <= {row[:2] for row in table}
        else:
            assert (key, str(value)) in table
    for name, version in manifest["packages"].items():
        assert (name, version) in table
    for inp in manifest["inputs"]:  # direct inputs with their hashes
        assert f"`{inp['path']}` (hash `{inp['hash'][:12]}`)" in card
    for secret in SECRETS:  # configs carry fake credentials; none reach the card
        assert secret not in card


def test_documents_card_accounts_for_every_document(cards, artifacts):
    card, counts = cards["documents"], read_manifest(artifacts["documents"])["counts"]
    assert "Accounting: input (10) = kept (6) + rejected (3) + quarantined (1): holds." in card
    assert ("contaminated:gsm8k", "1", "10.00%") in rows_of(card)
    assert re.search(r"### Decontamination\n(.*\n)*\| gsm8k \| 1 \|", card)
    assert sum(counts["rejected"].values()) == 3
    assert 'load_dataset("nano/x", "rejected", revision="nf-test", split="train")' in card


def test_broken_accounting_is_shown_not_hidden(tmp_path):
    from artifact_factory import raw_shard

    art = documents(tmp_path, raw_shard(tmp_path))
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["counts"]["input"] = 12
    (art / "manifest.json").write_text(json.dumps(manifest))
    assert "DOES NOT hold (off by 2)" in render_card(art, repo_id="a/b", revision="main")


def test_lineage_goes_back_to_the_raw_shards(cards, artifacts):
    card = cards["checkpoint"]  # checkpoint <- sft set <- traces <- raw prompts
    lines = [ln for ln in card.splitlines() if ln.lstrip().startswith("- `")]
    assert [ln.index("-") for ln in lines] == [0, 2, 4]
    assert "made by `nanoforge select`" in lines[0] and "made by `nanoforge synth`" in lines[1]
    assert "prompts.jsonl" in lines[2] and "raw input" in lines[2]


def test_lineage_flags_an_upstream_artifact_rebuilt_since(tmp_path):
    from artifact_factory import blend, raw_shard

    raw = raw_shard(tmp_path)
    mix = blend(tmp_path, documents(tmp_path, raw))
    documents(tmp_path, raw, min_words=80)  # same path, new config: the blend was made from the old one
    card = render_card(mix, repo_id="a/b", revision="main")
    assert "documents made by `nanoforge curate`; rebuilt since" in card
    assert "web-00000.jsonl" not in card  # the rebuilt artifact's inputs are not the blend's lineage


def test_blend_card_has_the_mixture_tables(cards, artifacts):
    weights = json.loads((artifacts["blend"] / "phase1" / "blend.json").read_text())
    table = rows_of(cards["blend"])
    for source, w in weights.items():
        assert (source, *map(str, w.values())) in table
    assert "phase1/tokens.bin" in cards["blend"]


def test_traces_card_has_model_and_sampling(cards):
    table = rows_of(cards["traces"])
    assert ("temperature", "0.6") in table and ("backend", "transformers") in table
    assert ("api_key", "<redacted>") not in table  # credentials are not sampling parameters
    assert "### generator" in cards["traces"]


def test_sft_card_has_train_and_test_splits(cards):
    data = DatasetCard(cards["sft"]).data
    assert [f["split"] for f in data.configs[0]["data_files"]] == ["train", "test"]


def test_checkpoint_card_has_eval_results(cards):
    assert ("think", "0.4375") in rows_of(cards["checkpoint"])


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ConfigError, match="no card template for artifact kind 'tokens'"):
        card_kind("tokens")


def test_lineage_flags_a_raw_shard_edited_since(tmp_path):
    from artifact_factory import raw_shard

    raw = raw_shard(tmp_path)
    art = documents(tmp_path, raw)
    assert "raw input\n" in render_card(art, repo_id="a/b", revision="main")
    raw.write_text(raw.read_text() + '{"id": "late", "text": "added after curation"}\n')
    assert "raw input; changed since" in render_card(art, repo_id="a/b", revision="main")


def test_traces_card_summarises_generators_recorded_in_the_data(tmp_path):
    """The per-row `generator`/`sampling_params` (not just the config) show up, without per-sample seeds."""
    from artifact_factory import write_parquet

    from pipelines.core.artifacts import Artifact

    art = Artifact(tmp_path / "synth", kind="traces", stage="synth", config={"backend": "vllm"})
    with art.writing() as tmp:
        gen = {"model": "nvidia/NVIDIA-Nemotron-Nano-12B-v2-Base", "revision": "main", "backend": "vllm"}
        rows = [
            {
                "id": f"p:{k}",
                "generator": gen,
                "reasoning": "on" if k < 3 else "off",
                "sampling_params": {"temperature": 0.6 if k < 3 else 0.0, "seed": k},
            }
            for k in range(4)
        ]
        write_parquet(tmp / "traces" / "part-0.parquet", rows)
        art.counts = {"samples": 4}
    table = rows_of(render_card(art.path, repo_id="a/b", revision="main"))
    model = "nvidia/NVIDIA-Nemotron-Nano-12B-v2-Base"
    assert (model, "main", "vllm", "0.6", "on", "3") in table  # 3 rows share one setting (seeds differ)
    assert (model, "main", "vllm", "0.0", "off", "1") in table
