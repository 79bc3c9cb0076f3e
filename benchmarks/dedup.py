"""Fuzzy dedup and decontamination: nanoforge (pipelines/dedup/fuzzy.py, decontaminate.py) vs datatrove 0.10.1.

    python -m benchmarks.dedup                      # 200 MB of text (the issue's size)
    python -m benchmarks.dedup --target_mb 20       # what fits a shared 2-core machine
    python -m benchmarks.dedup --parts signature decont scurve    # the in-process parts only

Input (benchmarks/data/dedup/, gitignored, built once): documents made of 8-40 lines drawn from the real web text
in ../shared/data (dolma's Common Crawl shard and CCNet docs, C4, Wikipedia sentences), and near-copies of earlier
documents (15%) the way the web duplicates pages: another header and footer, 0-8% of the words replaced, so the
copies spread over word 5-gram Jaccard 0.5-1.0. 8 JSONL.gz shards written one after the other, so input order is
generation order (a copy comes after its source); ids `s<shard>-<line>` sort in input order.

Parts, all at the `fineweb` preset (word 5-grams, 14 bands x 8 rows, 64-bit):
  signature  MinHash signatures alone, one process: docs/s per CPU-second, ours (batches of 256) vs datatrove's
             MinhashDedupSignature (get_shingles + get_signature), and how many signatures are bit-identical.
  decont     13-gram decontamination, one process: find_contamination vs datatrove's NGramsDecontFilter with the
             same index (export_datatrove), recall on planted GSM8K / MATH-500 problems, false positives.
  scurve     share of planted pairs that share an LSH band, by exact Jaccard, against 1-(1-s^r)^b.
  e2e        the whole dedup (read, signatures, buckets, clusters, filter + write kept docs) as subprocesses: ours on
             local Ray with 1 and 2 CPUs; datatrove's 4 stages (MinhashDedupSignature, Buckets, Cluster, Filter)
             on LocalPipelineExecutor with 2 workers. Wall time, CPU seconds and peak RSS of the process tree,
             agreement of the removed-id sets (raw, and with datatrove's clusters given our survivor rule).
Results: benchmarks/results/dedup.md.
Length (~540 lines): four benchmarks (signature, decont, scurve, e2e) run ours and datatrove side by side on one
generated corpus in one process, sharing its builder and reader; split, each part would rebuild or reload the corpus.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.process_tree import measure

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = HERE / "data" / "dedup"
SHARED = Path(os.environ.get("NANOFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))
NUM_FILES = 8
HEADERS = ["Home | News | Sport | Contact", "Skip to main content", "Posted by admin", "Menu Search Login"]
FOOTERS = [
    "Share this: Facebook Twitter",
    "© 2019 All rights reserved. Privacy Policy",
    "Leave a comment",
    "Related posts",
]
FRACTIONS = [0.0, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.065, 0.08]


# --- input -----------------------------------------------------------------------------------------------------


def line_pool() -> list[str]:
    lines = []
    for rel in [
        "dolma_tests/CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz",
        "dolma_tests/cc_en_head-0091.jsonl.gz",
        "dolma_tests/cc_en_head-0174.jsonl.gz",
        "llamafactory_demo/c4_demo.jsonl",
    ]:
        opener = gzip.open if rel.endswith(".gz") else open
        with opener(SHARED / rel, "rt") as f:
            for line in f:
                lines += json.loads(line)["text"].split("\n")
    for article in (SHARED / "llamafactory_demo" / "wiki_demo.txt").read_text().splitlines():
        sentences = article.split(". ")
        lines += [". ".join(sentences[i : i + 3]) + "." for i in range(0, len(sentences), 3)]
    return sorted({s.strip() for s in lines if len(s.strip()) >= 40})


def near_copy(text: str, fraction: float, rng: random.Random) -> str:
    words = text.split(" ")
    for i in rng.sample(range(len(words)), int(fraction * len(words))):
        words[i] = rng.choice(["the", "new", "best", "2020", "our", "free", "online"])
    return "\n".join([rng.choice(HEADERS), " ".join(words), rng.choice(FOOTERS)])


def build_input(target_mb: int, seed: int = 0) -> Path:
    out = DATA / f"input-{target_mb}mb"
    if (out / "DONE").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    pool, rng = line_pool(), random.Random(seed)
    files = [gzip.open(out / f"shard-{i:03d}.jsonl.gz", "wt", compresslevel=1) for i in range(NUM_FILES)]
    lines = [0] * NUM_FILES
    recent: list[tuple[str, str]] = []  # (id, text) reservoir of earlier documents to copy from
    planted, written, n = [], 0, 0
    while written < target_mb * 1_000_000:
        shard = min(written * NUM_FILES // (target_mb * 1_000_000), NUM_FILES - 1)  # shards in generation order
        doc_id = f"s{shard:03d}-{lines[shard]:07d}"
        if recent and rng.random() < 0.15:
            source_id, source = rng.choice(recent)
            fraction = rng.choice(FRACTIONS)
            text = near_copy(source, fraction, rng)
            planted.append({"id": doc_id, "source": source_id, "fraction": fraction})
        else:
            text = "\n".join(rng.sample(pool, rng.randint(8, 40)))
        files[shard].write(json.dumps({"id": doc_id, "text": text}) + "\n")
        if len(recent) < 5000:
            recent.append((doc_id, text))
        else:
            recent[rng.randrange(5000)] = (doc_id, text)
        lines[shard] += 1
        written += len(text.encode())
        n += 1
    for f in files:
        f.close()
    (out / "planted.jsonl").write_text("".join(json.dumps(p) + "\n" for p in planted))
    (out / "DONE").write_text(json.dumps({"docs": n, "text_bytes": written, "planted": len(planted)}))
    return out


def read_docs(input_dir: Path, limit: int | None = None) -> list[dict]:
    docs = []
    for f in sorted(input_dir.glob("shard-*.jsonl.gz")):
        with gzip.open(f, "rt") as fh:
            docs += [json.loads(line) for line in fh]
    docs.sort(key=lambda d: d["id"])
    return docs[:limit] if limit else docs


# --- in-process parts ------------------------------------------------------------------------------------------


def cpu_rate(fn, items: list, batch: int) -> float:
    """Items per CPU-second of this process (a warm-up batch first: tokenizer loads, caches)."""
    fn(items[:50])
    start = time.process_time()
    for i in range(0, len(items), batch):
        fn(items[i : i + batch])
    return len(items) / (time.process_time() - start)


def peak_traced_mb(fn, items: list) -> float:
    """Peak memory (MB) Python and numpy allocate while `fn(items)` runs (tracemalloc; models and caches loaded
    beforehand are not counted): the working memory a worker needs on top of its loaded libraries."""
    import tracemalloc

    tracemalloc.start()
    fn(items)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e6


def part_signature(docs: list[dict], tmp: Path) -> list[str]:
    from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

    from pipelines.dedup.minhash import PRESETS, signatures

    texts = [d["text"] for d in docs]
    mb_per_doc = sum(len(t.encode()) for t in texts) / len(texts) / 1e6
    theirs = MinhashDedupSignature(output_folder=str(tmp / "sigs"))

    def datatrove_sigs(batch):
        out = []
        for t in batch:
            s = theirs.get_shingles(t)
            out.append(np.array(theirs.get_signature(s)).reshape(-1) if s.size else None)
        return out

    load = os.getloadavg()[0]
    ours_rate = cpu_rate(lambda b: signatures(b, PRESETS["fineweb"]), texts, 256)
    theirs_rate = cpu_rate(datatrove_sigs, texts, 256)
    ours_mem = peak_traced_mb(lambda b: signatures(b, PRESETS["fineweb"]), texts[:256])
    theirs_mem = peak_traced_mb(datatrove_sigs, texts[:256])
    ours, valid = signatures(texts, PRESETS["fineweb"])
    ref = datatrove_sigs(texts)
    same = sum(
        (r is None and not v) or (r is not None and v and (r == s).all())
        for r, s, v in zip(ref, ours, valid, strict=True)
    )
    return [
        "### Signature stage alone (one process, per CPU-second)",
        "",
        f"{len(texts)} documents ({mb_per_doc * len(texts):.1f} MB), load average {load:.1f} at the start. Peak "
        "memory: what the call allocates on a batch of 256 documents (tracemalloc), on top of the loaded libraries.",
        "",
        "| system | docs/s per core | MB/s per core | speed-up | peak memory per 256 docs (MB) |",
        "|---|---:|---:|---:|---:|",
        f"| datatrove MinhashDedupSignature | {theirs_rate:.0f} | {theirs_rate * mb_per_doc:.2f} | 1.0x | "
        f"{theirs_mem:.0f} |",
        f"| nanoforge signatures() (numpy, batches of 256) | {ours_rate:.0f} | **{ours_rate * mb_per_doc:.2f}** | "
        f"**{ours_rate / theirs_rate:.1f}x** | {ours_mem:.0f} |",
        "",
        f"Bit-identical signatures on this sample: **{same}/{len(texts)}** documents.",
    ]


def part_decont(docs: list[dict], tmp: Path) -> list[str]:
    from datatrove.data import Document
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter

    from pipelines.dedup.decontaminate import build_index, export_datatrove, find_contamination

    rng = random.Random(0)
    gsm8k, math500 = SHARED / "gsm8k" / "test.jsonl", SHARED / "math500" / "test.jsonl"
    problems = [json.loads(line)["question"] for line in open(gsm8k)][:100]
    problems += [json.loads(line)["problem"] for line in open(math500)][:100]
    texts = [d["text"] for d in docs]
    planted = rng.sample(range(len(texts)), len(problems))
    for i, p in zip(planted, problems, strict=True):
        lines = texts[i].split("\n")
        lines.insert(rng.randrange(len(lines) + 1), "Question: " + p)
        texts[i] = "\n".join(lines)
    index = build_index([f"gsm8k={gsm8k}:question", f"math500={math500}:problem"], n=13)
    export_datatrove(index, tmp / "decont")
    theirs = NGramsDecontFilter(str(tmp / "decont"), config=NGramsDecontConfig(n_grams=13))

    def datatrove_flags(batch):
        return [theirs.filter(Document(text=t, id="x")) is not True for t in batch]

    ours_rate = cpu_rate(lambda b: find_contamination(b, index), texts, 256)
    theirs_rate = cpu_rate(datatrove_flags, texts, 256)
    ours_flags = [f is not None for f in find_contamination(texts, index)]
    theirs_flags = datatrove_flags(texts)
    plant = set(planted)
    rows = []
    for name, flags, rate in (
        ("datatrove NGramsDecontFilter", theirs_flags, theirs_rate),
        ("nanoforge find_contamination", ours_flags, ours_rate),
    ):
        hits = sum(flags[i] for i in plant)
        false = sum(f for i, f in enumerate(flags) if i not in plant)
        rows.append(f"| {name} | {rate:.0f} | {rate / theirs_rate:.1f}x | {hits}/{len(plant)} | {false} |")
    short = index.stats["math500"]["short"]
    unmatchable = index.stats["math500"]["unmatchable"]
    return [
        "### Decontamination (13-grams, one process)",
        "",
        f"{len(texts)} documents, 100 GSM8K + 100 MATH-500 test problems pasted into 200 of them; both systems use "
        "the same index (ours exported to datatrove's format).",
        "",
        "| system | docs/s per core | speed-up | planted found | clean docs flagged |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"MATH-500 has {short} problems of 8-12 words (matched whole by us, invisible to a 13-gram index) and "
        f"{unmatchable} under 8 words or only numbers ('Evaluate $\\log_264$.' -> 'evaluate log 0'), which "
        "neither finds; our index also skips 13-grams that are mostly numbers (after numbers -> 0 they match any "
        "table of figures).",
    ]


def part_scurve(input_dir: Path, docs: list[dict], e2e_removed: set[str] | None) -> list[str]:
    from pipelines.dedup.minhash import PRESETS, band_keys, shingles, signatures

    params = PRESETS["fineweb"]
    by_id = {d["id"]: d["text"] for d in docs}
    planted = [json.loads(line) for line in open(input_dir / "planted.jsonl")]
    planted = [p for p in planted if p["id"] in by_id and p["source"] in by_id][:4000]
    a = [by_id[p["source"]] for p in planted]
    b = [by_id[p["id"]] for p in planted]
    ha, oa = shingles(a, params)
    hb, ob = shingles(b, params)
    jac = np.array(
        [
            len(np.intersect1d(ha[oa[i] : oa[i + 1]], hb[ob[i] : ob[i + 1]]))
            / max(1, len(np.union1d(ha[oa[i] : oa[i + 1]], hb[ob[i] : ob[i + 1]])))
            for i in range(len(planted))
        ]
    )
    hit = (band_keys(signatures(a, params)[0], params) == band_keys(signatures(b, params)[0], params)).any(axis=1)
    removed = np.array([p["id"] in e2e_removed for p in planted]) if e2e_removed is not None else None
    lines = [
        "### S-curve: planted near-copy pairs sharing an LSH band, by exact 5-gram Jaccard",
        "",
        f"{len(planted)} planted (copy, source) pairs; theory: 1-(1-s^8)^14 averaged over the pairs in the bin.",
        "",
        "| Jaccard | pairs | share a band | theory | copy removed end to end |",
        "|---|---:|---:|---:|---:|",
    ]
    for lo, hi in (
        (0.0, 0.5),
        (0.5, 0.6),
        (0.6, 0.7),
        (0.7, 0.75),
        (0.75, 0.8),
        (0.8, 0.85),
        (0.85, 0.9),
        (0.9, 0.95),
        (0.95, 1.01),
    ):
        sel = (jac >= lo) & (jac < hi)
        if sel.sum():
            e2e = f"{removed[sel].mean():.3f}" if removed is not None else "-"
            lines.append(
                f"| {lo:.2f}-{min(hi, 1):.2f} | {sel.sum()} | {hit[sel].mean():.3f} | "
                f"{params.inclusion_probability(jac[sel]).mean():.3f} | {e2e} |"
            )
    recall = hit[jac >= 0.8].mean() if (jac >= 0.8).any() else float("nan")
    lines += [
        "",
        f"Pairs at Jaccard >= 0.8 sharing a band: **{recall:.3f}** (end-to-end removal also counts copies "
        "linked through a third document).",
    ]
    return lines


# --- end to end (subprocesses) ---------------------------------------------------------------------------------


def read_shard(batch: dict) -> dict:
    """One shard path -> (node = shard << 32 | line, id, text): the node order is the input order."""
    import pyarrow as pa

    nodes, ids, texts = [], [], []
    for path in batch["path"]:
        shard = int(Path(path).name.split("-")[1].split(".")[0])
        with gzip.open(path, "rt") as f:
            for line_no, line in enumerate(f):
                record = json.loads(line)
                nodes.append((shard << 32) | line_no)
                ids.append(record["id"])
                texts.append(record["text"])
    return pa.table({"node": pa.array(nodes, pa.uint64()), "id": ids, "text": texts})


def drop_removed(batch, removed):
    import pyarrow as pa

    keep = ~np.isin(batch["node"].to_numpy(), removed)
    return batch.filter(pa.array(keep))


def ours_main(input_dir: str, out: str, cpus: int) -> None:
    import ray

    from pipelines.core.runtime import init_ray
    from pipelines.dedup.fuzzy import fuzzy_duplicates, signature_table
    from pipelines.dedup.minhash import PRESETS

    init_ray(num_cpus=cpus)
    files = sorted(str(p) for p in Path(input_dir).glob("shard-*.jsonl.gz"))
    docs = ray.data.from_items([{"path": f} for f in files], override_num_blocks=len(files))
    docs = docs.map_batches(read_shard, batch_size=1)
    params = PRESETS["fineweb"]
    dropped = fuzzy_duplicates(None, params, sigs=signature_table(docs, params))
    removed = np.sort(
        np.concatenate(
            [b["node"] for b in dropped.iter_batches(batch_format="numpy", batch_size=None)]
            or [np.zeros(0, np.uint64)]
        )
    )
    kept = docs.map_batches(drop_removed, batch_format="pyarrow", fn_kwargs={"removed": removed})
    kept.write_parquet(f"{out}/kept")
    # removed ids for the comparison (ids encode the node: s<shard>-<line>)
    Path(out, "removed.json").write_text(
        json.dumps([f"s{int(n) >> 32:03d}-{int(n) & 0xFFFFFFFF:07d}" for n in removed])
    )
    ray.shutdown()


def datatrove_main(input_dir: str, out: str, workers: int) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    config = MinhashConfig()  # 5-grams, 14 buckets x 8 hashes, 64-bit xxhash: our fineweb preset
    files = len(list(Path(input_dir).glob("shard-*.jsonl.gz")))

    def reader():
        return JsonlReader(input_dir, glob_pattern="shard-*.jsonl.gz")

    stage1 = LocalPipelineExecutor(
        pipeline=[reader(), MinhashDedupSignature(f"{out}/sigs", config=config)],
        tasks=files,
        workers=workers,
        logging_dir=f"{out}/logs/1",
    )
    stage2 = LocalPipelineExecutor(
        pipeline=[MinhashDedupBuckets(f"{out}/sigs", f"{out}/buckets", config=config)],
        tasks=config.num_buckets,
        workers=workers,
        logging_dir=f"{out}/logs/2",
        depends=stage1,
    )
    stage3 = LocalPipelineExecutor(
        pipeline=[MinhashDedupCluster(f"{out}/buckets", f"{out}/remove", config=config, save_cluster_id=True)],
        tasks=1,
        logging_dir=f"{out}/logs/3",
        depends=stage2,
    )
    stage4 = LocalPipelineExecutor(
        pipeline=[
            reader(),
            MinhashDedupFilter(f"{out}/remove", exclusion_writer=JsonlWriter(f"{out}/removed"), load_cluster_ids=True),
            JsonlWriter(f"{out}/kept"),
        ],
        tasks=files,
        workers=workers,
        logging_dir=f"{out}/logs/4",
        depends=stage3,
    )
    stage4.run()


def datatrove_removed(out: Path) -> tuple[set[str], set[str]]:
    """(removed ids, removed ids if each datatrove cluster kept its first document in input order, like ours)."""
    clusters: dict[int, list[str]] = {}
    removed = set()
    for folder, is_removed in ((out / "removed", True), (out / "kept", False)):
        for f in sorted(folder.glob("*.jsonl.gz")):
            with gzip.open(f, "rt") as fh:
                for line in fh:
                    d = json.loads(line)
                    cluster = d.get("metadata", {}).get("minhash_cluster_id", -1)
                    if is_removed:
                        removed.add(d["id"])
                    if cluster != -1:
                        clusters.setdefault(cluster, []).append(d["id"])
    canonical = {i for members in clusters.values() for i in sorted(members)[1:]}
    return removed, canonical


def part_e2e(input_dir: Path, info: dict, cores: int) -> tuple[list[str], set[str]]:
    import shutil

    env = {**os.environ, "NANOFORGE_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    work = DATA / f"out-{input_dir.name}"
    runs = {f"nanoforge, Ray {c} CPU{'s' if c > 1 else ''}": ("ours", c) for c in (1, 2)}
    runs[f"datatrove 4 stages, {cores} workers"] = ("datatrove", cores)
    results = {}
    for name, (system, n) in runs.items():
        out = work / f"{system}-{n}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "benchmarks.dedup", f"--{system}_child", str(input_dir), str(out), str(n)]
        print(f"=== {name}: {' '.join(cmd)}", flush=True)
        load = os.getloadavg()[0]
        r = measure(cmd, env)
        if r["code"]:
            raise SystemExit(f"{name} failed with exit code {r['code']}")
        if system == "ours":
            r["removed"] = set(json.loads((out / "removed.json").read_text()))
        else:
            r["removed"], r["canonical"] = datatrove_removed(out)
        results[name] = {**r, "load": load}
    mb = info["text_bytes"] / 1e6
    lines = [
        "### End to end: read, signatures, buckets, clusters, filter + write kept documents",
        "",
        "| system | wall (s) | CPU (s) | MB/s | peak RSS (GB) | removed | load avg at start |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['seconds']:.0f} | {r['cpu']:.0f} | {mb / r['seconds']:.2f} | "
            f"{r['rss'] / 1e9:.2f} | {len(r['removed']):,} | {r['load']:.1f} |"
        )
    names = list(results)
    ours1, ours2, theirs = (results[n] for n in names)

    def jaccard(x: set, y: set) -> float:
        return len(x & y) / max(1, len(x | y))

    lines += [
        "",
        "- Agreement of removed-id sets, ours vs datatrove: raw Jaccard "
        f"**{jaccard(ours2['removed'], theirs['removed']):.4f}**; "
        f"with datatrove's clusters keeping their first document in input order (our survivor rule; datatrove "
        f"keeps an arbitrary root): **{jaccard(ours2['removed'], theirs['canonical']):.4f}** (target >= 0.98). "
        f"Ours with 1 and 2 CPUs removed the same set: {ours1['removed'] == ours2['removed']}.",
        f"- Wall time, ours (2 CPUs) / datatrove: **{ours2['seconds'] / theirs['seconds']:.2f}x** (target <= 0.5x); "
        f"CPU seconds: **{ours2['cpu'] / theirs['cpu']:.2f}x**.",
        f"- Scaling, ours 1 -> 2 CPUs: **{ours1['seconds'] / ours2['seconds']:.2f}x** faster.",
    ]
    return lines, ours2["removed"]


PARTS = ("signature", "decont", "e2e", "scurve")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target_mb", type=int, default=200, help="MB of text in the input")
    parser.add_argument("--parts", nargs="*", default=list(PARTS), choices=PARTS)
    parser.add_argument("--sample_docs", type=int, default=2000, help="documents for the in-process parts")
    parser.add_argument("--ours_child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--datatrove_child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ours_child:
        ours_main(args.ours_child[0], args.ours_child[1], int(args.ours_child[2]))
        return 0
    if args.datatrove_child:
        datatrove_main(args.datatrove_child[0], args.datatrove_child[1], int(args.datatrove_child[2]))
        return 0
    sys.path.insert(0, str(REPO))
    cores = 2
    input_dir = build_input(args.target_mb)
    info = json.loads((input_dir / "DONE").read_text())
    tmp = DATA / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    docs = read_docs(input_dir)
    sample = random.Random(1).sample(docs, min(args.sample_docs, len(docs)))
    mb = info["text_bytes"] / 1e6
    lines = [
        "## dedup: MinHash fuzzy dedup and decontamination, nanoforge vs datatrove",
        "",
        f"`python -m benchmarks.dedup --target_mb {args.target_mb}`: {info['docs']:,} documents, {mb:.0f} MB of "
        f"text in {NUM_FILES} JSONL.gz shards (lines of real web text from ../shared/data, {info['planted']:,} "
        f"planted near-copies); fineweb preset; {cores} cores. Timed on a shared machine (load average in the "
        "table): compare ratios, and CPU seconds where loads differ.",
        "",
    ]
    removed = None
    for part in args.parts:
        print(f"=== part {part}", flush=True)
        if part == "signature":
            lines += part_signature(sample, tmp) + [""]
        elif part == "decont":
            lines += part_decont(sample, tmp) + [""]
        elif part == "e2e":
            e2e, removed = part_e2e(input_dir, info, cores)
            lines += e2e + [""]
        elif part == "scurve":
            lines += part_scurve(input_dir, docs, removed) + [""]
    table = "\n".join(lines)
    print(table)
    if sorted(args.parts) != sorted(PARTS):  # a partial run must not replace the full results
        print(f"partial run ({', '.join(args.parts)}): benchmarks/results/dedup.md left as it was")
        return 0
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "dedup.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
