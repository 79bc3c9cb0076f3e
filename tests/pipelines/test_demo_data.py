"""demo-data: deterministic, planted defects are where planted.json says, and they mean what they claim.

Independent checks where possible: near-duplicate similarity with datatrove's own text simplification, the
heuristic verdicts with datatrove's filters, and arithmetic by evaluating each `<<expr=value>>` note.
"""

from __future__ import annotations

import ast
import gzip
import itertools
import json
import operator
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.core.artifacts import read_manifest
from pipelines.demo_data import DemoDataConfig, main, write_demo_data

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(num_pages=40, num_pii_pages=4, num_exact_duplicates=6, num_near_duplicates=6, num_spam_pages=14)
SMALL |= dict(num_non_english_pages=3, num_train_problems=20, num_test_problems=5)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The full default-size demo data (about a second to generate)."""
    out = tmp_path_factory.mktemp("demo")
    write_demo_data(DemoDataConfig(output_dir=str(out)), out)
    return out


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def lines(root: Path) -> dict[tuple[str, int], bytes]:
    """(shard file, 1-based line number) -> raw line bytes, for every web shard."""
    out = {}
    for shard in sorted((root / "web").glob("*.jsonl.gz")):
        for i, raw in enumerate(gzip.decompress(shard.read_bytes()).splitlines(), start=1):
            out[(f"web/{shard.name}", i)] = raw
    return out


def records(root: Path) -> dict[str, dict]:
    """id -> record for every line that is a JSON object with a string `text`."""
    out = {}
    for raw in lines(root).values():
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if isinstance(rec, dict) and isinstance(rec.get("text"), str):
            out[rec["id"]] = rec
    return out


def test_same_seed_is_byte_identical_across_processes(demo, tmp_path):
    # A second process with another hash seed: catches any dependence on set/dict iteration order.
    code = (
        "import sys; from pathlib import Path; from pipelines.demo_data import DemoDataConfig, write_demo_data; "
        "write_demo_data(DemoDataConfig(), Path(sys.argv[1]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env, cwd=REPO)
    assert tree(tmp_path) == tree(demo)


def test_another_seed_gives_other_data(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for seed, out in ((0, a), (1, b)):
        out.mkdir()
        write_demo_data(DemoDataConfig(seed=seed, **SMALL), out)
    ta, tb = tree(a), tree(b)
    assert ta.keys() == tb.keys()
    assert all(ta[name] != tb[name] for name in ta if name.startswith(("web/", "math/")))


def test_planted_counts_match_the_files(demo):
    planted = json.loads((demo / "planted.json").read_text())
    counts, ids, recs = planted["counts"], planted["ids"], records(demo)
    all_lines = lines(demo)
    assert counts["lines"] == len(all_lines) == sum(planted["files"].values())
    assert counts["lines"] == sum(v for k, v in counts.items() if k not in ("lines", "math_train", "math_test"))
    assert sorted(i for group in ids.values() for i in group) == sorted(recs)  # every record planted exactly once
    assert {k: len(v) for k, v in ids.items()} == {k: counts[k] for k in ids}
    assert counts["malformed"] == len(planted["malformed"]) > 0
    for key in ("exact_duplicate", "near_duplicate", "spam", "non_english", "pii"):
        assert counts[key] > 0, key

    for dup in planted["exact_duplicates"]:
        copy, original = recs[dup["id"]], recs[dup["original"]]
        assert copy["text"] == original["text"] and copy["url"] != original["url"]
    # Besides the planted copies, no two records share a text (else dedup tests would count wrong).
    texts = [r["text"] for i, r in recs.items() if i not in set(ids["exact_duplicate"]) | set(ids["empty"])]
    assert len(set(texts)) == len(texts)
    assert all(not recs[i]["text"].strip() for i in ids["empty"])
    for page in planted["pii"]:
        assert all(s in recs[page["id"]]["text"] for s in page["emails"] + page["phones"] + page["ips"])


def test_near_duplicates_stay_similar_and_ordinary_pages_do_not(demo):
    from datatrove.utils.text import simplify_text

    def shingles(text):  # word 5-grams after FineWeb's text simplification
        w = simplify_text(text).split()
        return {tuple(w[i : i + 5]) for i in range(len(w) - 4)}

    def jaccard(a, b):
        return len(a & b) / len(a | b)

    planted, recs = json.loads((demo / "planted.json").read_text()), records(demo)
    for near in planted["near_duplicates"]:
        text, original = recs[near["id"]]["text"], recs[near["original"]]["text"]
        assert text != original
        assert jaccard(shingles(text), shingles(original)) >= 0.8, near
    assert {n["edit"] for n in planted["near_duplicates"]} == {"header", "footer", "words"}
    sample = [shingles(recs[i]["text"]) for i in planted["ids"]["ordinary"][:150] + planted["ids"]["non_english"]]
    assert max(jaccard(a, b) for a, b in itertools.combinations(sample, 2)) < 0.5


def test_malformed_lines_really_are_malformed(demo):
    planted = json.loads((demo / "planted.json").read_text())
    all_lines = lines(demo)
    bad = {(m["file"], m["line"]): m["kind"] for m in planted["malformed"]}
    assert len(set(bad.values())) == len(bad)  # one of each kind
    for where, raw in all_lines.items():
        kind = bad.get(where)
        if kind == "invalid_utf8":
            with pytest.raises(UnicodeDecodeError):
                raw.decode("utf-8")
            continue
        if kind == "broken_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(raw)
            continue
        rec = json.loads(raw.decode("utf-8"))
        if kind == "not_an_object":
            assert not isinstance(rec, dict)
        elif kind == "missing_text":
            assert "text" not in rec
        elif kind in ("non_string_text", "null_text"):
            assert "text" in rec and not isinstance(rec["text"], str)
        else:  # every other line is a well-formed record
            assert kind is None and isinstance(rec["text"], str) and set(rec) == {"id", "text", "url", "date"}


OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate(node):
    if isinstance(node, ast.Constant):
        return node.value
    return OPS[type(node.op)](evaluate(node.left), evaluate(node.right))


def test_word_problem_solutions_are_arithmetically_correct(demo):
    train = [json.loads(line) for line in (demo / "math" / "train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (demo / "math" / "test.jsonl").read_text().splitlines()]
    assert (len(train), len(test)) == (400, 50)
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    for row in train + test:
        assert set(row) == {"question", "answer"}
        final = re.fullmatch(r"(?s)(.*)\n#### (\d+)", row["answer"])
        assert final, row["answer"]
        notes = re.findall(r"<<([^=>]+)=(\d+)>>(\d+)", final.group(1))
        assert notes, row
        known = {int(n) for n in re.findall(r"\d+", row["question"])} | {2, 4, 100}  # halves, quarters, percent
        for expr, value, shown in notes:
            assert evaluate(ast.parse(expr, mode="eval").body) == int(value) == int(shown), (expr, value)
            assert {int(n) for n in re.findall(r"\d+", expr)} <= known, (expr, row["question"])  # no invented inputs
            known.add(int(value))
        assert int(final.group(2)) == int(notes[-1][1])  # the answer is the last computed value


@pytest.mark.slow  # loading spaCy's tokenizer took 20-30 s on the loaded 2-core machine; the filters ~1 s
def test_datatrove_filters_keep_ordinary_pages_and_drop_spam(demo):
    # English word splitting in datatrove 0.10 uses spaCy's blank English tokenizer: no downloads needed.
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    planted, recs = json.loads((demo / "planted.json").read_text()), records(demo)
    good = planted["ids"]["ordinary"][:20] + planted["ids"]["pii"][:3] + planted["ids"]["near_duplicate"][:2]
    by_kind = {}
    for s in planted["spam"]:
        by_kind.setdefault(s["kind"], []).append(s["id"])
    spam = [i for ids in by_kind.values() for i in ids[:3]]
    filters = [GopherQualityFilter(), GopherRepetitionFilter(), C4QualityFilter(), FineWebQualityFilter()]
    verdicts = {i: [f.filter(Document(text=recs[i]["text"], id=i)) for f in filters] for i in good + spam}
    gopher_kept = [i for i in verdicts if verdicts[i][0] is True]
    assert len(set(good) & set(gopher_kept)) >= 0.95 * len(good)
    assert len(set(spam) - set(gopher_kept)) >= 0.75 * len(spam)
    assert all(all(v is True for v in verdicts[i]) for i in good), {i: verdicts[i] for i in good}
    assert all(any(v is not True for v in verdicts[i]) for i in spam)  # every spam kind fails some filter


def test_main_writes_an_artifact_and_skips_an_up_to_date_rerun(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["--output_dir", str(out), *itertools.chain.from_iterable((f"--{k}", str(v)) for k, v in SMALL.items())]
    main(argv)
    manifest = read_manifest(out)
    assert manifest["kind"] == "demo-data" and manifest["stage"] == "demo-data"
    assert manifest["counts"]["ordinary"] == SMALL["num_pages"] and manifest["counts"]["math_train"] == 20
    first = tree(out)
    capsys.readouterr()
    main(argv)
    assert "up to date" in capsys.readouterr().out
    main([*argv, "--force"])
    assert "up to date" not in capsys.readouterr().out
    again = tree(out)
    assert {k: v for k, v in again.items() if k != "manifest.json"} == {
        k: v for k, v in first.items() if k != "manifest.json"
    }
