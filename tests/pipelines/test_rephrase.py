"""rephrase on real web documents (C4 pages and Wikipedia articles from ../shared/data), with a local
OpenAI-compatible server and the replay backend: pieces, joins, post-filter reasons, counts, lineage, resume, mix."""

from __future__ import annotations

import functools
import json
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datapaths import shared_data

import pipelines.rephrase as rephrase_module
from pipelines.core.artifacts import Artifact, read_manifest
from pipelines.rephrase import parse_args, rephrase
from pipelines.rephrasing.ops import NEMOTRON_CC_TASKS, estimate_tokens, split_pieces

HIGH_TASKS = [t for t, s in NEMOTRON_CC_TASKS.items() if "High" in s["labels"]]


def wiki_articles() -> list[str]:
    text = shared_data("llamafactory_demo", "wiki_demo.txt").read_text()
    return [line.replace(". ", ".\n", 40) for line in text.splitlines() if line.strip()]  # lines as paragraphs


def labelled_documents(root: Path, n_c4: int = 13, files: int = 1) -> tuple[Path, list[dict]]:
    """A documents artifact of real pages in `files` Parquet files: C4 documents labelled High / Low / Medium in
    turn, and two long Wikipedia articles labelled Low (they need several pieces)."""
    lines = shared_data("llamafactory_demo", "c4_demo.jsonl").read_text().splitlines()[:n_c4]
    labels = ["High", "Low", "Medium"]
    docs = [
        {
            "id": f"c4-{i}",
            "text": json.loads(line)["text"],
            "source": "c4",
            "url": f"https://c4.example/{i}",
            "quality_label": labels[i % 3],
            "quality_bucket": {"High": 19, "Low": 3, "Medium": 14}[labels[i % 3]],
        }
        for i, line in enumerate(lines)
    ]
    for k, article in enumerate(wiki_articles()[:2]):
        docs.append(
            {
                "id": f"wiki-{k}",
                "text": article[:6000],
                "source": "wikipedia",
                "url": None,
                "quality_label": "Low",
                "quality_bucket": 2,
            }
        )
    art = Artifact(root / "quality", kind="documents", stage="quality", config={"n": len(docs)}, inputs=[])
    with art.writing() as tmp:
        (tmp / "documents").mkdir()
        table, step = __import__("pyarrow").Table.from_pylist(docs), -(-len(docs) // files)
        for i in range(files):
            pq.write_table(table.slice(i * step, step), tmp / "documents" / f"part-{i:05d}.parquet")
        art.counts = {"input": len(docs), "kept": len(docs)}
    return art.path, docs


def reworded(piece: str) -> str:
    """A stand-in rewrite: every sentence with its words reversed (English words, no 8-gram of the source)."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", piece) if s.strip()]
    return " ".join(" ".join(reversed(s.split())) for s in sentences)


class RewriteServer(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible /v1/chat/completions server; its answer depends on which document is asked."""

    plan: dict[str, str] = {}  # a document's text -> behaviour
    requests: list[dict] = []
    german = ""
    contamination = ""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        RewriteServer.requests.append(body)
        piece = body["messages"][-1]["content"].split("Text:\n", 1)[1]
        behaviour = next((b for doc, b in self.plan.items() if piece in doc), "ok")
        text, finish, status = "Here is the rewritten text:\n" + reworded(piece), "stop", 200
        if behaviour == "copy":
            text = piece
        elif behaviour == "refusal":
            text = "I'm sorry, but I cannot rewrite this document because it looks like an advertisement " * 2
        elif behaviour == "empty":
            text = "Here is the rewritten text:\n"
        elif behaviour == "short":
            text = "Air cleaners clean air."
        elif behaviour == "length":
            finish = "length"
        elif behaviour == "german":
            text = self.german
        elif behaviour == "contaminated":
            text += " " + self.contamination
        if behaviour == "error":
            status, payload = 400, {"error": {"message": "maximum context length exceeded"}}
        else:
            payload = {
                "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": {"completion_tokens": len(text.split())},
            }
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


BEHAVIOURS = {  # C4 document index -> what the server answers for it (the others: a good rewrite)
    0: "copy",  # High: 4 tasks
    1: "refusal",  # Low: wikipedia_rephrase
    3: "empty",
    4: "short",
    6: "length",
    7: "german",
    9: "contaminated",
    # 2, 5, 8, 11 are Medium: no task; 10 (Low) and 12 (High) get good rewrites
}
EXPECTED = {  # reason -> units: High docs (0, 3, 6, 9) have 4 tasks each, Low docs (1, 4, 7, wiki) one
    "copy_of_source": 4,
    "refusal": 1,
    "empty": 4,
    "too_short": 1,
    "truncated": 4,
    "wrong_language": 1,
    "contaminated:gsm8k": 4,
}


@pytest.fixture(scope="module")
def served(ray_local, tmp_path_factory):
    """One rephrase run through the local server, shared by the tests that read its output."""
    root = tmp_path_factory.mktemp("rephrase")
    quality, docs = labelled_documents(root)
    gsm8k = shared_data("gsm8k", "test.jsonl")
    RewriteServer.plan = {docs[i]["text"]: b for i, b in BEHAVIOURS.items()}
    RewriteServer.requests = []
    RewriteServer.german = " ".join(
        shared_data("lingua_language_testdata", "sentences", "de.txt").read_text().splitlines()[:8]
    )
    RewriteServer.contamination = json.loads(gsm8k.read_text().splitlines()[0])["question"]
    server = ThreadingHTTPServer(("127.0.0.1", 0), RewriteServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    argv = [
        "--input_path",
        str(quality),
        "--backend",
        "openai",
        "--model_name_or_path",
        "served-model",
        "--api_base",
        f"http://127.0.0.1:{server.server_address[1]}/v1",
        "--api_key_env",
        "",
        "--max_piece_tokens",
        "600",
        "--decontaminate_against",
        f"gsm8k={gsm8k}:question",
        "--output_dir",
        str(root / "rephrase"),
    ]
    out = rephrase(parse_args(argv))
    server.shutdown()
    return out, docs, list(RewriteServer.requests)


def test_every_unit_is_kept_or_rejected_with_its_reason(served):
    out, docs, _ = served
    counts = read_manifest(out)["counts"]
    high, low = sum(d["quality_label"] == "High" for d in docs), sum(d["quality_label"] == "Low" for d in docs)
    assert counts["documents_input"] == len(docs) and counts["documents_without_task"] == {"Medium": 4}
    assert counts["input"] == 4 * high + low == counts["kept"] + sum(counts["rejected"].values())
    assert counts["rejected"] == EXPECTED
    rejected = pq.read_table(out / "rejected").to_pylist()
    by_doc = {}
    for r in rejected:
        by_doc.setdefault(r["source_id"], set()).add(r["reason"])
    assert by_doc["c4-0"] == {"copy_of_source"} and by_doc["c4-9"] == {"contaminated:gsm8k"}
    assert by_doc["c4-7"] == {"wrong_language"} and by_doc["c4-6"] == {"truncated"}
    assert all(r["stage"] == "rephrase" and r["id"] == f"{r['source_id']}:{r['task']}" for r in rejected)
    kept = pq.read_table(out / "documents").to_pylist()
    assert sorted({d["source_id"] for d in kept}) == ["c4-10", "c4-12", "wiki-0", "wiki-1"]
    assert counts["kept_by_task"] == {"wikipedia_rephrase": 3} | {t: 1 for t in HIGH_TASKS}


def test_long_documents_are_split_on_paragraphs_and_joined_in_order(served):
    out, docs, requests = served
    wiki = next(d for d in docs if d["id"] == "wiki-0")
    asked = [r["messages"][-1]["content"].split("Text:\n", 1)[1] for r in requests]
    pieces = [p for p in asked if p.split()[0] == wiki["text"].split()[0] or p in wiki["text"]]
    pieces.sort(key=wiki["text"].find)  # requests run concurrently: put them in text order
    assert len(pieces) > 2  # 6000 characters at <= 600 estimated tokens a piece
    assert " ".join(" ".join(pieces).split()) == " ".join(wiki["text"].split())  # all of it, in order, once
    assert all(p.endswith((".", "\n")) or estimate_tokens(p) > 500 for p in pieces[:-1])  # cut at sentence ends
    doc = next(d for d in pq.read_table(out / "documents").to_pylist() if d["source_id"] == "wiki-0")
    assert doc["text"] == "\n\n".join(reworded(p) for p in pieces)  # preamble removed, pieces in order
    assert json.loads(doc["metadata"]) == {
        "source": "wikipedia",
        "pieces": len(pieces),
        "preambles_removed": len(pieces),
    }


def test_lineage_columns_and_prompts(served):
    out, _, requests = served
    manifest = read_manifest(out)
    doc = pq.read_table(out / "documents").to_pylist()[0]
    assert doc["id"] == f"{doc['source_id']}:{doc['task']}" and doc["source"] == f"synthetic/{doc['task']}"
    assert doc["generator"] == {"model": "served-model", "revision": None, "backend": "openai"}
    assert doc["sampling_params"]["temperature"] == 0.7 and doc["sampling_params"]["max_new_tokens"] == 2048
    assert doc["lang"] == "en" and doc["quality_label"] == "Low"
    prompt = (out / "prompts" / f"{doc['task']}.md").read_text()
    assert manifest["prompts"][doc["task"]]["sha256"] == doc["prompt_hash"]
    assert __import__("hashlib").sha256(prompt.encode()).hexdigest() == doc["prompt_hash"]
    assert {r["model"] for r in requests} == {"served-model"} and all(r["max_tokens"] == 2048 for r in requests)
    assert not (out / ".work").exists()


def test_split_pieces_cuts_paragraphs_then_sentences():
    words = lambda s: len(s.split())  # noqa: E731
    assert split_pieces("a b\n\nc d", 2, words) == ["a b", "c d"]
    assert split_pieces("a b c.\nd e f. g h i.", 3, words) == ["a b c.", "d e f.", "g h i."]
    assert split_pieces("one two three four five", 2, words) == ["one two", "three four", "five"]
    article = wiki_articles()[0]
    pieces = split_pieces(article, 200)
    assert all(estimate_tokens(p) <= 200 for p in pieces) and len(pieces) > 5
    assert " ".join(" ".join(pieces).split()) == " ".join(article.split())


@pytest.mark.slow  # three runs of the stage
def test_replay_backend_resumes_from_finished_pieces(ray_local, tmp_path, monkeypatch):
    quality, docs = labelled_documents(tmp_path, n_c4=6)
    articles = wiki_articles()
    replay = tmp_path / "replay.jsonl"
    units = [
        (d["id"], t)
        for d in docs
        for t in (HIGH_TASKS if d["quality_label"] == "High" else ["wikipedia_rephrase"])
        if d["quality_label"] != "Medium"
    ]
    rows = [{"source_id": s, "task": t, "text": articles[2 + i % 20][:1500]} for i, (s, t) in enumerate(units[1:])]
    replay.write_text("".join(json.dumps(r) + "\n" for r in rows))  # the first unit has no replayed text
    argv = [
        "--input_path",
        str(quality),
        "--backend",
        "replay",
        "--replay_path",
        str(replay),
        "--shard_rows",
        "2",
        "--output_dir",
        str(tmp_path / "rephrase"),
    ]
    done = rephrase(parse_args(argv))
    manifest = read_manifest(done)
    shutil.copytree(done / "documents", tmp_path / "first")
    done = tmp_path / "first"
    assert manifest["counts"]["rejected"] == {"generation_error": 1}
    assert manifest["counts"]["kept"] == len(units) - 1 == manifest["counts"]["pieces_generated"] - 1

    # A run killed after generating, before joining: its partial directory holds the generated pieces.
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rephrase_module, "write_outcomes", crash)
    with pytest.raises(KeyboardInterrupt):
        rephrase(parse_args([*argv, "--force"]))
    monkeypatch.undo()
    shards = sorted((tmp_path / ".rephrase.partial" / ".work" / "pieces").rglob("*.parquet"))
    for f in shards[: len(shards) // 2]:  # and only half of them were written when it died
        f.unlink()
    left = sum(pq.read_table(f, columns=["error"])["error"].null_count for f in shards[len(shards) // 2 :])
    again = rephrase(parse_args([*argv, "--force"]))
    counts = read_manifest(again)["counts"]
    assert counts["pieces_resumed"] == left > 0 and counts["pieces_generated"] == len(units) - left  # failed: again
    assert {k: counts[k] for k in ("input", "kept", "rejected")} == {
        k: manifest["counts"][k] for k in ("input", "kept", "rejected")
    }
    assert pq.read_table(again / "documents").sort_by("id").equals(pq.read_table(done).sort_by("id"))


@pytest.mark.slow  # a whole mix run
def test_mix_blends_real_and_synthetic_sources(served, tmp_path):
    from pipelines import mix

    out, docs, _ = served
    config = {
        "input_paths": [str(out.parent / "quality"), str(out)],
        "sources": [
            {"name": "real_high", "input": 0, "labels": ["High"], "max_epochs": 2},
            {"name": "synthetic_low", "input": 1, "labels": ["Low"], "max_epochs": 3},  # the source doc's label
            {"name": "synthetic_high", "input": 1, "labels": ["High"], "max_epochs": 1},
        ],
        "phases": [
            {
                "name": "phase1",
                "fraction": 1.0,
                "weights": {"real_high": 0.4, "synthetic_low": 0.4, "synthetic_high": 0.2},
            }
        ],
        "total_tokens": 6000,
        "on_shortfall": "report",
        "docs_per_shard": 100,
    }
    (tmp_path / "mix.yaml").write_text(json.dumps(config))
    assert mix.main(["--config", str(tmp_path / "mix.yaml"), "--output_dir", str(tmp_path / "blend")]) == 0
    blend = json.loads((tmp_path / "blend" / "blend.json").read_text())
    assert blend["sources"]["synthetic_low"]["available_docs"] == 3  # c4-10, wiki-0, wiki-1 rephrased
    assert blend["sources"]["synthetic_high"]["available_docs"] == 4  # c4-12 x 4 tasks
    shard = pq.read_table(tmp_path / "blend" / blend["phases"]["phase1"]["shards"][0]).to_pylist()
    synthetic = [r for r in shard if r["blend_source"].startswith("synthetic")]
    assert synthetic and all(r["source"].startswith("synthetic/") for r in synthetic)
    assert {r["blend_source"] for r in shard} == {"real_high", "synthetic_low", "synthetic_high"}


def test_card_renders_prompts_generator_and_lineage(served):
    from pipelines.core.cards import render_card

    out, _, _ = served
    card = render_card(out, repo_id="me/synthetic", revision="nf-test")
    assert "Synthetic pretraining documents made by `nanoforge rephrase`" in card and "## Prompts" in card
    for task in NEMOTRON_CC_TASKS:
        assert f"### {task}" in card
    assert (out / "prompts" / "diverse_qa.md").read_text().splitlines()[0] in card
    assert "served-model" in card and "openai" in card  # the generator, as recorded per row
    assert "copy_of_source" in card and "holds" in card  # reasons and the conservation check
    assert "quality" in card and "nanoforge quality" in card  # lineage back to the source documents


@pytest.mark.slow  # two runs of the stage with a tiny model (~25 s)
@pytest.mark.timeout(300)
def test_rephrase_is_byte_identical_when_run_twice(ray_local, tmp_path, tiny_base):
    """Same input + config + seed -> the same files, byte for byte (time fields excepted), with sampling on: each
    piece is generated with its own seed, whatever batch it lands in and however Ray splits the work. The second run
    has two model actors holding both CPUs of the local Ray (before runtime.read_files, the reader waited forever)."""
    from tests.pipelines.test_synth import artifact_bytes

    quality, _ = labelled_documents(tmp_path, n_c4=4, files=3)  # blocks may reach the model in any order
    out = tmp_path / "rephrase"
    config = {"input_path": str(quality), "backend": "transformers", "model_name_or_path": str(tiny_base)}
    config |= {"max_piece_tokens": 200, "max_new_tokens": 6, "temperature": 1.0, "batch_size": 3, "min_words": 1}
    config |= {"reject_truncated": False, "language": None, "output_dir": str(out)}
    (tmp_path / "rephrase.yaml").write_text(json.dumps(config))  # JSON is YAML
    runs = []
    for workers in (1, 2):  # fresh runs at the same path (--force would change the config)
        shutil.rmtree(out, ignore_errors=True)
        rephrase(parse_args(["--config", str(tmp_path / "rephrase.yaml"), "--num_workers", str(workers)]))
        # the config, recorded in the manifest and the card, differs in num_workers alone
        unify = {b'"num_workers": 2': b'"num_workers": 1', b"num_workers: 2": b"num_workers: 1"}
        runs.append(
            {
                p: functools.reduce(lambda b, kv: b.replace(*kv), unify.items(), data)
                for p, data in artifact_bytes(out).items()
            }
        )
    assert any(p.startswith("documents/") for p in runs[0]) and "prompts/diverse_qa.md" in runs[0]
    assert sorted(runs[0]) == sorted(runs[1])
    assert [p for p in runs[0] if runs[0][p] != runs[1][p]] == []
