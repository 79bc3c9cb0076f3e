"""HTML extraction per core: curate's WARC path (`pipelines/curation/extract.py`) vs datatrove's `Trafilatura`.

    python -m benchmarks.extract                 # 20 real pages x 5 rounds, one process, alternating
    python -m benchmarks.extract --rounds 20

Input: the 20 HTML pages of trafilatura's own test set in ../shared/data/trafilatura_tests (real sites in 11
countries, 12-118 KB), with its gold snippets (`evaldata.json`: text that must / must not be in the main text).
Both sides call trafilatura with FineWeb's settings (favor precision, no comments, deduplicate); datatrove runs it
in its `ExtractorSandbox` subprocess (1 s limit per page by default, raised here so a loaded machine drops
nothing), ours under a SIGALRM limit in the calling process. trafilatura's `deduplicate` remembers text across
pages in a process (and a forked sandbox inherits it), so every pass of either side starts from `reset_caches`.
Reported: pages/s and HTML MB/s of one core (each side runs on one core at a time), the gold snippets each side
satisfies, and whether the texts are identical. The README's 10 TB plan takes its extraction rate from here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NANOFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))
PAGES = SHARED / "trafilatura_tests"


def load_pages() -> tuple[dict[str, str], dict[str, dict]]:
    if not PAGES.exists():
        sys.exit(f"{PAGES} is missing: set NANOFORGE_SHARED_DATA to the shared data folder")
    pages = {p.name: p.read_text(errors="replace") for p in sorted(PAGES.glob("*/*.html"))}
    gold = {v["file"]: v for v in json.loads((PAGES / "evaldata.json").read_text()).values() if v["file"] in pages}
    return pages, gold


def ours(pages: dict[str, str], timeout_s: float) -> dict[str, str]:
    from pipelines.curation.extract import extract_main_text

    return {name: extract_main_text(html, timeout_s) for name, html in pages.items()}


def datatrove(pages: dict[str, str], timeout_s: float) -> dict[str, str]:
    from datatrove.data import Document
    from datatrove.pipeline.extractors import Trafilatura

    docs = [Document(text=html, id=name) for name, html in pages.items()]
    return {d.id: d.text for d in Trafilatura(favour_precision=True, timeout=timeout_s).run(iter(docs))}


def gold_score(texts: dict[str, str], gold: dict[str, dict]) -> tuple[int, int]:
    """(snippets satisfied, snippets): every `with` snippet present, every `without` snippet absent."""
    ok = total = 0
    for name, g in gold.items():
        text = texts.get(name, "")
        ok += sum(s in text for s in g.get("with", [])) + sum(s not in text for s in g.get("without", []))
        total += len(g.get("with", [])) + len(g.get("without", []))
    return ok, total


def reset_caches() -> None:
    from trafilatura.meta import reset_caches

    reset_caches()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="passes over the pages per side, alternating sides")
    p.add_argument("--timeout_s", type=float, default=30.0, help="per-page limit on both sides")
    a = p.parse_args(argv)
    pages, gold = load_pages()
    mb = sum(len(h.encode()) for h in pages.values()) / 1e6
    sides = {"nanoforge (curate's extract_main_text)": ours, "datatrove Trafilatura (ExtractorSandbox)": datatrove}
    best = dict.fromkeys(sides, float("inf"))
    texts = {}
    for name, fn in sides.items():  # warm-up: imports, the sandbox's start
        texts[name] = fn(dict(list(pages.items())[:1]), a.timeout_s)
    for _ in range(a.rounds):
        for name, fn in sides.items():
            reset_caches()
            t = time.perf_counter()
            texts[name] = fn(pages, a.timeout_s)
            best[name] = min(best[name], time.perf_counter() - t)
    ref = best["datatrove Trafilatura (ExtractorSandbox)"]
    first, second = texts.values()
    print(f"{len(pages)} pages, {mb:.2f} MB of HTML, best of {a.rounds} passes each, one core each\n")
    print("| system | seconds / pass | pages/s per core | HTML MB/s per core | gold snippets | vs datatrove |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, secs in best.items():
        ok, total = gold_score(texts[name], gold)
        rates = f"{len(pages) / secs:.1f} | {mb / secs:.3f}"
        print(f"| {name} | {secs:.3f} | {rates} | {ok}/{total} | {ref / secs:.2f}x |")
    same = sum(first.get(k) == second.get(k) for k in pages)
    print(f"\nidentical extracted text: {same}/{len(pages)} pages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
