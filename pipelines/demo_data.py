"""Generate the demo inputs from a seed: a web corpus with planted defects, and arithmetic word problems.

No network and no copied data: the text comes from templates and word lists in `pipelines/demo/text.py`.
The same config gives byte-identical files (fixed order, sorted JSON keys, gzip with mtime 0); only
`manifest.json` differs between runs (it records when and from which code the data was made).

Local:    nanoforge demo-data --output_dir runs/demo/demo_data [--seed 0]
Cluster:  generate once on any node (seconds, a few MB) and point curate at `web/`:
          nanoforge demo-data --config pipelines/configs/demo_data.yaml --output_dir /shared/demo_data

Output directory:
  web/shard-0000N.jsonl.gz   one JSON object a line: {"date", "id", "text", "url"}; planted: ordinary pages, pages
                             with PII, exact and near duplicates, pages quoting a test problem, spam/boilerplate,
                             German/French/Spanish pages, empty texts, and malformed lines (broken JSON, missing or
                             non-string `text`, bad UTF-8)
  math/train.jsonl, math/test.jsonl   GSM8K format: {"question", "answer"}, the answer a worked solution with
                             `<<expr=value>>` calculator notes, ending in `#### <number>`
  planted.json               what was planted: ids per category, duplicate -> original, spam kinds, languages,
                             PII strings, file and line of every malformed line; `counts` adds up to the lines
  README.md                  the same in words
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.core.artifacts import Artifact
from pipelines.core.config import ConfigError, parse, to_dict
from pipelines.demo import text as T

CATEGORIES = (
    "ordinary",
    "pii",
    "exact_duplicate",
    "near_duplicate",
    "contaminated",
    "spam",
    "non_english",
    "empty",
    "malformed",
)
# (kind, raw line): each is unreadable as a document in its own way. `{id}` is filled with "bad-N".
MALFORMED = [
    ("broken_json", b'{"id": "{id}", "text": "This line was cut off in the middle of a wri'),
    ("missing_text", b'{"id": "{id}", "url": "https://broken.example/no-text"}'),
    ("non_string_text", b'{"id": "{id}", "text": 12345, "url": "https://broken.example/number"}'),
    ("null_text", b'{"id": "{id}", "text": null, "url": "https://broken.example/null"}'),
    (
        "invalid_utf8",
        b'{"id": "{id}", "text": "Caf\xe9 au lait \xff\xfe is not valid UTF-8.", "url": '
        b'"https://broken.example/bytes"}',
    ),
    ("not_an_object", b'["a", "JSON", "array", "is", "not", "a", "document"]'),
]
LANGS = ("de", "fr", "es")


@dataclass
class DemoDataConfig:
    output_dir: str = field(
        default="runs/demo/demo_data", metadata={"help": "Where to write web/, math/, planted.json."}
    )
    seed: int = field(default=0, metadata={"help": "Random seed; the same seed gives byte-identical files."})
    num_pages: int = field(default=1600, metadata={"help": "Ordinary (unique, clean, English) web pages."})
    num_pii_pages: int = field(default=40, metadata={"help": "Ordinary pages that contain an email, phone and IP."})
    num_exact_duplicates: int = field(
        default=120, metadata={"help": "Copies of ordinary pages (same text, new id/url)."}
    )
    num_near_duplicates: int = field(
        default=120, metadata={"help": "Edited copies (header/footer/words), 5-gram Jaccard >= 0.8."}
    )
    num_contaminated_pages: int = field(
        default=10, metadata={"help": "Ordinary pages that quote a math/test.jsonl problem (for decontamination)."}
    )
    num_spam_pages: int = field(
        default=140, metadata={"help": f"Low-quality pages, cycling through {', '.join(T.SPAM_KINDS)}."}
    )
    num_non_english_pages: int = field(default=36, metadata={"help": f"Pages in {', '.join(LANGS)} (cycling)."})
    num_shards: int = field(default=4, metadata={"help": "Number of web/*.jsonl.gz shards."})
    num_train_problems: int = field(default=400, metadata={"help": "Word problems in math/train.jsonl."})
    num_test_problems: int = field(
        default=50, metadata={"help": "Word problems in math/test.jsonl (disjoint from train)."}
    )
    force: bool = field(default=False, metadata={"help": "Regenerate even if an up-to-date output exists."})


def parse_args(argv: list[str] | None = None) -> DemoDataConfig:
    return parse(DemoDataConfig, argv=argv)


def jaccard5(a: str, b: str) -> float:
    """Jaccard similarity of the word 5-gram sets of two texts (lowercased, punctuation dropped)."""

    def grams(text: str) -> set[tuple[str, ...]]:
        words = re.findall(r"\w+", text.lower())
        return {tuple(words[i : i + 5]) for i in range(max(1, len(words) - 4))}

    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb)


def web_documents(cfg: DemoDataConfig, rng: random.Random, test_questions: list[str]) -> list[dict]:
    """Every well-formed web record, shuffled, with its planted category in `_category` (and details in `_*`)."""
    docs: list[dict] = []
    seen: set[str] = set()  # only the planted exact duplicates may share a text

    def add(text: str, category: str, **details) -> dict:
        seen.add(text)
        docs.append({"text": text, "_category": category, **{f"_{k}": v for k, v in details.items()}})
        return docs[-1]

    def fresh(make):
        """`make()` (a text, or a tuple starting with one), called again until the text is new."""
        for _ in range(1000):
            made = make()
            if (made[0] if isinstance(made, tuple) else made) not in seen:
                return made
        raise RuntimeError(f"{make} keeps making texts that already exist; its templates need more variety")

    ordinary = [add(fresh(lambda: T.english_page(rng)), "ordinary") for _ in range(cfg.num_pages)]
    for _ in range(cfg.num_pii_pages):
        text, pii = fresh(lambda: T.pii_page(rng))
        add(text, "pii", pii=pii)
    # Originals of near and exact duplicates are disjoint; an exact original may get several copies.
    num_originals = cfg.num_near_duplicates + (cfg.num_exact_duplicates + 1) // 2
    if num_originals > cfg.num_pages:
        raise ConfigError(f"num_pages={cfg.num_pages} is too small: the duplicates need {num_originals} originals")
    picks = rng.sample(ordinary, num_originals)
    near_of, exact_of = picks[: cfg.num_near_duplicates], picks[cfg.num_near_duplicates :]
    for _ in range(cfg.num_exact_duplicates):
        original = rng.choice(exact_of)
        add(original["text"], "exact_duplicate", original=original)
    for original in near_of:
        while True:  # rare retries: an edit that moved too many 5-grams on a short page
            text, edit = fresh(lambda o=original: T.near_duplicate(o["text"], rng))
            if (sim := jaccard5(text, original["text"])) >= 0.8:
                break
        add(text, "near_duplicate", original=original, edit=edit, jaccard=round(sim, 4))
    for i in range(cfg.num_contaminated_pages):  # a benchmark problem pasted into a page, as forums and blogs do
        which = i % len(test_questions)
        page = fresh(lambda q=test_questions[which]: T.quoting_page(rng, q))
        add(page, "contaminated", test_question=which)
    for i in range(cfg.num_spam_pages):
        kind = T.SPAM_KINDS[i % len(T.SPAM_KINDS)]
        add(fresh(lambda k=kind: T.spam_page(rng, k)), "spam", kind=kind)
    for i in range(cfg.num_non_english_pages):
        lang = LANGS[i % len(LANGS)]
        add(fresh(lambda lang=lang: T.foreign_page(rng, lang)), "non_english", lang=lang)
    add("", "empty")
    add(" \n\t \n", "empty")
    rng.shuffle(docs)
    sites = [f"{town.replace(' ', '').lower()}-{kind}.example" for town in T.TOWNS for kind in ("notes", "journal")]
    for i, doc in enumerate(docs):  # ids and urls follow file order, so they say nothing about the category
        doc["id"] = f"doc-{i:05d}"
        slug = "-".join(re.findall(r"[a-z]+", doc["text"].split("\n", 1)[0].lower())[:6]) or "page"
        doc["url"] = f"https://www.{rng.choice(sites)}/{rng.randint(2015, 2024)}/{slug}-{i}"
        doc["date"] = f"{rng.randint(2015, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return docs


def planted_details(docs: list[dict], malformed: list[dict]) -> dict:
    """planted.json: ids per category and what each planted defect is, for tests of later stages."""
    by = {c: [d for d in docs if d["_category"] == c] for c in CATEGORIES}
    return {
        "ids": {c: [d["id"] for d in by[c]] for c in CATEGORIES if c != "malformed"},
        "exact_duplicates": [{"id": d["id"], "original": d["_original"]["id"]} for d in by["exact_duplicate"]],
        "near_duplicates": [
            {"id": d["id"], "original": d["_original"]["id"], "edit": d["_edit"], "jaccard5": d["_jaccard"]}
            for d in by["near_duplicate"]
        ],
        "contaminated": [{"id": d["id"], "test_question": d["_test_question"]} for d in by["contaminated"]],
        "spam": [{"id": d["id"], "kind": d["_kind"]} for d in by["spam"]],
        "non_english": [{"id": d["id"], "lang": d["_lang"]} for d in by["non_english"]],
        "pii": [{"id": d["id"], **d["_pii"]} for d in by["pii"]],
        "malformed": malformed,
    }


def write_web(cfg: DemoDataConfig, out: Path, rng: random.Random, test_questions: list[str]) -> dict:
    """Write web/*.jsonl.gz with the malformed lines spliced in; return planted.json's content."""
    docs = web_documents(cfg, rng, test_questions)
    n, k = len(docs), cfg.num_shards
    rows = [
        json.dumps({f: d[f] for f in ("date", "id", "text", "url")}, sort_keys=True, ensure_ascii=False) for d in docs
    ]
    shards = [[row.encode() for row in rows[i * n // k : (i + 1) * n // k]] for i in range(k)]
    bad_lines = {}  # (shard, raw line) -> kind
    for j, (kind, raw) in enumerate(MALFORMED):
        raw = raw.replace(b"{id}", f"bad-{j}".encode())
        shards[j % k].insert(rng.randint(0, len(shards[j % k])), raw)
        bad_lines[(j % k, raw)] = kind
    (out / "web").mkdir(parents=True)
    malformed, files = [], {}
    for s, lines in enumerate(shards):
        name = f"web/shard-{s:05d}.jsonl.gz"
        for i, raw in enumerate(lines, start=1):
            if (s, raw) in bad_lines:
                malformed.append({"file": name, "line": i, "kind": bad_lines[(s, raw)]})
        (out / name).write_bytes(gzip.compress(b"\n".join(lines) + b"\n", compresslevel=6, mtime=0))
        files[name] = len(lines)
    planted = planted_details(docs, malformed)
    planted["files"] = files
    planted["counts"] = {c: len(ids) for c, ids in planted["ids"].items()}
    planted["counts"] |= {"malformed": len(malformed), "lines": sum(files.values())}
    return planted


def write_math(cfg: DemoDataConfig, out: Path, rng: random.Random) -> tuple[dict[str, int], list[str]]:
    """math/train.jsonl and math/test.jsonl: distinct GSM8K-style problems, split train | test; returns the counts
    and the test questions."""
    problems: dict[str, str] = {}  # question -> answer; insertion-ordered, so deterministic
    while len(problems) < cfg.num_train_problems + cfg.num_test_problems:
        question, answer = T.word_problem(rng)
        problems.setdefault(question, answer)
    rows = [json.dumps({"question": q, "answer": a}, sort_keys=True, ensure_ascii=False) for q, a in problems.items()]
    (out / "math").mkdir(parents=True)
    splits = {"train": rows[: cfg.num_train_problems], "test": rows[cfg.num_train_problems :]}
    for split, lines in splits.items():
        (out / "math" / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines))
    test_questions = list(problems)[cfg.num_train_problems :]
    return {f"math_{split}": len(lines) for split, lines in splits.items()}, test_questions


README = """# nanoforge demo data (seed {seed})

Generated by `nanoforge demo-data --output_dir DIR --seed {seed}` from templates and word lists
(`pipelines/demo/text.py`); nothing here was copied or downloaded. Details per id are in `planted.json`.

## web/ ({lines} lines in {shards} JSONL.gz shards; fields `id`, `text`, `url`, `date`)

| planted | lines | what a curation pipeline should do |
|---|---:|---|
| ordinary | {ordinary} | keep: varied English prose that passes the Gopher, C4 and FineWeb heuristics |
| pii | {pii} | keep, with the email, phone number and public IP address redacted |
| exact_duplicate | {exact_duplicate} | drop all but one copy (same text as an ordinary page; other id and url) |
| near_duplicate | {near_duplicate} | drop in fuzzy dedup (new header/footer or 1-3 words changed; \
word 5-gram Jaccard >= 0.8) |
| contaminated | {contaminated} | drop in decontamination against math/test.jsonl (the page quotes a test problem) |
| spam | {spam} | drop in the heuristic filters ({spam_kinds}) |
| non_english | {non_english} | drop in language ID ({langs}) |
| empty | {empty} | drop: the text is empty or whitespace |
| malformed | {malformed} | quarantine: {malformed_kinds} |

## math/ (GSM8K format)

`train.jsonl` ({math_train}) and `test.jsonl` ({math_test}): `question` and `answer`, a worked solution with
`<<expr=value>>` calculator notes ending in `#### <number>`; every step is computed, so the answers are correct.
"""


def write_demo_data(cfg: DemoDataConfig, out: Path) -> dict[str, int]:
    """Write everything under `out`; return the counts (also in planted.json)."""
    math_counts, test_questions = write_math(cfg, out, random.Random(f"{cfg.seed}:math"))
    if cfg.num_contaminated_pages and not test_questions:
        raise ConfigError("num_contaminated_pages needs num_test_problems > 0 (the pages quote test problems)")
    planted = write_web(cfg, out, random.Random(f"{cfg.seed}:web"), test_questions)
    counts = planted["counts"] | math_counts
    planted["counts"] = counts
    (out / "planted.json").write_text(json.dumps({"seed": cfg.seed, **planted}, indent=1, sort_keys=True) + "\n")
    kinds = dict(
        spam_kinds=", ".join(T.SPAM_KINDS), langs=", ".join(LANGS), malformed_kinds=", ".join(k for k, _ in MALFORMED)
    )
    (out / "README.md").write_text(README.format(seed=cfg.seed, shards=cfg.num_shards, **counts, **kinds))
    return counts


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    # The generator's source is part of the identity: edited templates regenerate the data without --force.
    source = hashlib.sha256(Path(__file__).read_bytes() + Path(T.__file__).read_bytes()).hexdigest()[:16]
    art = Artifact(cfg.output_dir, kind="demo-data", stage="demo-data", config=to_dict(cfg) | {"generator": source})
    if art.up_to_date() and not cfg.force:
        print(art.skip_message())
        return 0
    start = time.monotonic()
    with art.writing(resume=False) as tmp:
        art.counts = write_demo_data(cfg, tmp)
    c = art.counts
    print(
        f"[demo-data] {c['lines']} web lines ({c['ordinary']} ordinary, {c['exact_duplicate']} exact + "
        f"{c['near_duplicate']} near duplicates, {c['contaminated']} quoting test problems, {c['spam']} "
        f"spam, {c['non_english']} non-English, {c['pii']} with PII, {c['malformed']} malformed) and "
        f"{c['math_train']}+{c['math_test']} word problems -> {cfg.output_dir} "
        f"in {time.monotonic() - start:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
