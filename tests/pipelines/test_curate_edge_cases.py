"""curate on inputs that once stopped it for good: lone surrogates, a record that breaks a block, all rejected."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from pipelines import curate
from pipelines.core.artifacts import read_manifest
from pipelines.curation import filters

REPO = Path(__file__).resolve().parents[2]


def read_dir(path: Path) -> list[dict]:
    return [row for f in sorted(path.glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def test_lone_surrogates_never_reach_arrow(ray_local, tmp_path):
    """JSON allows "\\ud83d" alone; with normalize: false it used to reach pyarrow, fail the chunk, and every
    resume."""
    src = tmp_path / "in" / "s.jsonl"
    src.parent.mkdir()
    lines = [
        r'{"id": "a\ud83d", "url": "https://x.org/\ud83d", "text": "A page about gardens \ud83d in spring."}',
        r'{"id": "b", "text": "A whole emoji \ud83d\ude00 stays one character."}',
        '{"id": "c", "text": "An ordinary page."}',
    ]
    src.write_text("\n".join(lines) + "\n")
    config = tmp_path / "raw.yaml"
    config.write_text(
        "# raw\n# nanoforge curate --config raw.yaml\nfilters: []\nlanguage_id: false\npii: false\nnormalize: false\n"
    )
    out = tmp_path / "out"
    curate.main(["--config", str(config), "--input_paths", str(src), "--output_dir", str(out)])
    assert read_manifest(out)["counts"]["kept"] == 3
    docs = {d["id"]: d for d in read_dir(out / "documents")}
    assert docs["a\ufffd"]["url"] == "https://x.org/\ufffd" and "gardens \ufffd in" in docs["a\ufffd"]["text"]
    assert "emoji \U0001f600 stays" in docs["b"]["text"]


def test_a_record_that_breaks_a_block_is_quarantined_not_its_chunk(monkeypatch):
    """Any exception while one record is processed quarantines that record (file, line, error); the others go on."""
    real = filters.normalize_text

    def fragile(text: str) -> str:
        if "boom" in text:
            raise RuntimeError("a bug in one block")
        return real(text)

    monkeypatch.setattr(filters, "normalize_text", fragile)
    items = [("line", n, json.dumps({"text": t}).encode()) for n, t in enumerate(["fine one", "boom", "fine two"], 1)]
    settings = dict(
        text_field="text",
        id_field="id",
        url_field="url",
        raw_chars=200,
        normalize=True,
        language_id=False,
        rejected_text=True,
        filters="[]",
    )
    rows = filters.process_chunk("c", items, "f.jsonl", "/data/f.jsonl", "data", settings).to_pylist()
    assert [r["status"] for r in rows] == ["kept", "quarantined", "kept"]
    assert rows[1]["line_or_row"] == 2 and rows[1]["file"] == "/data/f.jsonl" and '"boom"' in rows[1]["raw"]
    assert rows[1]["error"].startswith("/data/f.jsonl:2: cannot process this record: RuntimeError: a bug in one block")


def test_every_document_rejected_gives_a_valid_empty_artifact_and_downstream_takes_it(ray_local, tmp_path):
    """100 German pages with the FineWeb config: exact and fuzzy dedup get no candidates (exact dedup used to raise
    ArrowInvalid on the empty table); the artifact is complete with zero kept rows and every reason counted."""
    src = tmp_path / "de" / "de.jsonl"
    src.parent.mkdir()
    text = (
        "Dies ist die Seite Nummer {} über das Wetter in Berlin. Es regnet heute sehr viel, und die Menschen "
        "bleiben zu Hause."
    )
    src.write_text("".join(json.dumps({"id": f"de{i}", "text": text.format(i)}) + "\n" for i in range(100)))
    out = tmp_path / "out"
    curate.main(
        [
            "--config",
            str(REPO / "pipelines/configs/curate_fineweb.yaml"),
            "--input_paths",
            str(src),
            "--output_dir",
            str(out),
        ]
    )
    counts = read_manifest(out)["counts"]
    assert counts["input"] == 100 and counts["kept"] == 0 and counts["rejected"] == {"wrong_language": 100}
    assert read_dir(out / "documents") == [] and pq.read_schema(out / "documents" / "part-00000.parquet").names[
        :2
    ] == ["id", "text"]
    assert len(read_dir(out / "rejected")) == 100
    # the stages downstream take the empty artifact as it is: quality writes an empty documents artifact (its
    # columns, no rows), mix an empty blend; any classifier file loads (lid.176's `en` label stands in for `hq`)
    from pipelines import mix, quality
    from pipelines.curation.filters import find_lang_model

    quality.main(
        [
            "--config",
            str(REPO / "pipelines/configs/quality_demo.yaml"),
            "--input_path",
            str(out),
            "--classifiers",
            find_lang_model(),
            "--fasttext_label",
            "__label__en",
            "--output_dir",
            str(tmp_path / "quality"),
        ]
    )
    assert read_manifest(tmp_path / "quality")["counts"]["input"] == 0
    assert "quality_bucket" in pq.read_schema(tmp_path / "quality" / "documents" / "part-00000.parquet").names
    mix.main(
        [
            "--config",
            str(REPO / "pipelines/configs/mix_demo.yaml"),
            "--input_paths",
            str(tmp_path / "quality"),
            "--tokenizer",
            "",
            "--output_dir",
            str(tmp_path / "mix"),
        ]
    )
    assert {p["docs"] for p in read_manifest(tmp_path / "mix")["counts"]["phases"].values()} == {0}
