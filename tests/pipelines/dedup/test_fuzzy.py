"""Fuzzy dedup on real documents with planted near-duplicates: recall, survivors, determinism, index, components.

Length (~480 lines): one module under test (`pipelines/dedup/fuzzy.py`), its fixtures (planted pairs, the shared
corpus) built once here and used by every case.
"""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pyarrow as pa
import pytest
from datapaths import shared_data

from pipelines.dedup.fuzzy import connected_components, fuzzy_duplicates, hashed_nodes, save_index, signature_table
from pipelines.dedup.minhash import parse_spec, shingles

HEADERS = ["Home | News | Sport | Weather | Contact us", "Skip to main content", "Posted by admin on 12 March 2019"]
FOOTERS = [
    "Share this: Facebook Twitter Email",
    "© 2019 All rights reserved. Privacy Policy | Terms of Use",
    "Related posts: 10 things you did not know",
    "Leave a comment\nYour email address will not be published.",
]


def _originals() -> list[str]:
    """Real web pages (CommonCrawl via dolma, C4) of 120+ words, so a few edits keep Jaccard >= 0.8."""
    cc = shared_data("dolma_tests", "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz")
    c4 = shared_data("llamafactory_demo", "c4_demo.jsonl")
    texts = [json.loads(line)["text"] for line in gzip.open(cc, "rt")]
    texts += [json.loads(line)["text"] for line in open(c4)]
    return [t for t in texts if 120 <= len(t.split()) <= 3000]


def _jaccard(a: str, b: str) -> float:
    h, o = shingles([a, b], parse_spec("fineweb"))
    x, y = np.unique(h[o[0] : o[1]]), np.unique(h[o[1] : o[2]])
    return len(np.intersect1d(x, y)) / max(len(np.union1d(x, y)), 1)


def _near_copy(text: str, rng: random.Random, target: float = 0.8) -> str:
    """A copy the way the web duplicates pages: another header/footer, a few words changed; Jaccard >= target."""
    for changes in (12, 6, 3, 1, 0):
        words = text.split(" ")
        for i in rng.sample(range(len(words)), min(changes, len(words))):
            words[i] = rng.choice(["the", "a", "new", "great", "2020", "this", "our"])
        copy = "\n".join([rng.choice(HEADERS), " ".join(words), rng.choice(FOOTERS)])
        if _jaccard(text, copy) >= target:
            return copy
    return text + "\n" + rng.choice(FOOTERS)


@pytest.fixture(scope="module")
def planted():
    """Originals first (input order = node order), then 1-3 near copies of 120 of them, shuffled."""
    rng = random.Random(0)
    originals = _originals()
    copies = []
    for k in rng.sample(range(len(originals)), 120):
        copies += [(k, _near_copy(originals[k], rng)) for _ in range(rng.randint(1, 3))]
    rng.shuffle(copies)
    texts = originals + [c for _, c in copies]
    cluster_of = list(range(len(originals))) + [k for k, _ in copies]
    return texts, cluster_of, len(originals)


def _dataset(texts: list[str], blocks: int = 4, ids: list[str] | None = None):
    import ray

    ids = ids or [f"doc-{i}" for i in range(len(texts))]
    table = pa.table({"node": pa.array(np.arange(len(texts), dtype=np.uint64)), "id": ids, "text": texts})
    return ray.data.from_arrow(
        [table.slice(a, len(texts) // blocks + 1) for a in range(0, len(texts), len(texts) // blocks + 1)]
    )


def _arrow(ds) -> pa.Table:
    import ray

    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


def _dropped(ds, params="fineweb", **kwargs) -> dict[int, tuple[int, str]]:
    table = _arrow(fuzzy_duplicates(ds, parse_spec(params), **kwargs))
    return {
        n: (c, s) for n, c, s in zip(*(table[k].to_pylist() for k in ("node", "cluster", "survivor_id")), strict=True)
    }


def test_cs336_fuzzy_duplicate_fixtures(ray_local):
    """The MIT licenses of rails and react are near-duplicates (keep one), the PyTorch license is kept; of the
    line-duplicate docs, doc1 and doc2 are identical (keep 4 of 5)."""
    root = shared_data("cs336_assignment4_fixtures")
    for folder, expected_kept in (("documents_with_fuzzy_duplicates", 2), ("documents_with_line_duplicates", 4)):
        files = sorted((root / folder).glob("*.txt"))
        dropped = _dropped(_dataset([f.read_text() for f in files], blocks=1, ids=[f.name for f in files]))
        assert len(files) - len(dropped) == expected_kept
        names = {files[n].name: survivor for n, (_, survivor) in dropped.items()}
        assert names == (
            {"react_mit_license.txt": "rails_mit_license.txt"} if expected_kept == 2 else {"doc2.txt": "doc1.txt"}
        )


def test_planted_near_duplicates_recall_and_survivors(ray_local, planted):
    texts, cluster_of, n_originals = planted
    dropped = _dropped(_dataset(texts))
    copies = range(n_originals, len(texts))
    recall = sum(i in dropped for i in copies) / len(copies)
    assert recall >= 0.9, recall
    for node, (cluster, survivor) in dropped.items():
        assert cluster not in dropped and survivor == f"doc-{cluster}" and cluster < node  # first occurrence kept
        if cluster_of[node] != cluster_of[cluster]:  # not planted together: must be a real near-duplicate
            assert _jaccard(texts[node], texts[cluster]) >= 0.5, (node, cluster)
    lost = [i for i in range(n_originals) if i in dropped and _jaccard(texts[i], texts[dropped[i][0]]) < 0.7]
    assert not lost, "originals dropped without a near-duplicate kept"
    for k in set(cluster_of[n_originals:]):  # a planted cluster has one survivor, its first document if kept
        members = [i for i, c in enumerate(cluster_of) if c == k]
        survivors = {dropped[i][0] for i in members if i in dropped}
        assert len(survivors) <= 1 and (k in dropped or survivors <= {k}), (k, survivors)


def test_same_result_whatever_the_partitioning(ray_local, planted):
    texts, cluster_of, n_originals = planted
    texts = texts[:150] + [t for t, c in zip(texts[n_originals:], cluster_of[n_originals:], strict=True) if c < 150]
    one = _dropped(_dataset(texts, blocks=1), num_partitions=1)
    many = _dropped(_dataset(texts, blocks=7), num_partitions=5)
    assert one == many and len(one) > 20


def test_nemotron_cc_preset_finds_copies(ray_local, planted):
    texts, cluster_of, n_originals = planted
    picked = list(range(150)) + [i for i in range(n_originals, len(texts)) if cluster_of[i] < 150]
    dropped = _dropped(_dataset([texts[i] for i in picked]), params="nemotron_cc")
    copies = [j for j, i in enumerate(picked) if i >= n_originals]
    assert sum(j in dropped for j in copies) / len(copies) >= 0.8


def test_dedup_a_new_corpus_against_a_saved_index(ray_local, planted, tmp_path):
    texts, cluster_of, n_originals = planted
    old = texts[:200]
    sigs = signature_table(_dataset(old), parse_spec("fineweb"))
    save_index(sigs, fuzzy_duplicates(None, parse_spec("fineweb"), sigs=sigs), tmp_path / "index")
    # The same documents in other blocks: the same index files, byte for byte (rows arrive in shuffle order)
    again = signature_table(_dataset(old, blocks=5), parse_spec("fineweb"))
    save_index(again, fuzzy_duplicates(None, parse_spec("fineweb"), sigs=again), tmp_path / "again")
    files = sorted(f.relative_to(tmp_path / "index") for f in (tmp_path / "index").rglob("*.parquet"))
    assert files == sorted(f.relative_to(tmp_path / "again") for f in (tmp_path / "again").rglob("*.parquet"))
    assert all((tmp_path / "index" / f).read_bytes() == (tmp_path / "again" / f).read_bytes() for f in files)

    rng = random.Random(1)
    fresh = texts[200:260]
    # copies at Jaccard >= 0.9, found with probability 1-(1-0.9^8)^14 > 0.999 each
    new = [_near_copy(old[i], rng, 0.9) for i in range(0, 40, 2)] + fresh + [_near_copy(fresh[0], rng, 0.9)]
    table = _arrow(
        fuzzy_duplicates(
            _dataset(new, ids=[f"new-{i}" for i in range(len(new))]), parse_spec("fineweb"), index=tmp_path / "index"
        )
    )
    rows = {r["node"]: r for r in table.to_pylist()}
    for j in range(20):  # copies of indexed documents: dropped, the indexed document named as survivor
        assert rows[j]["indexed"] and rows[j]["survivor_id"] in {f"doc-{i}" for i in range(200)}
    assert rows[len(new) - 1]["survivor_id"] == "new-20" and not rows[len(new) - 1]["indexed"]
    assert all(r["survivor_id"].startswith(("doc-", "new-")) for r in rows.values())
    assert not any(20 <= n < len(new) - 1 and not rows[n]["indexed"] for n in rows)  # fresh pages kept


def test_exact_jaccard_check_drops_false_positives(ray_local, planted):
    """With 40 bands of 1 row, pages at Jaccard ~0.4 collide; the exact check keeps only true near-duplicates."""
    rng = random.Random(2)
    page = max(planted[0][:200], key=len)
    words = page.split(" ")
    far = " ".join(w if rng.random() > 0.1 else "zz" + w for w in words)  # Jaccard ~0.4
    near = _near_copy(page, rng, target=0.9)
    assert _jaccard(page, far) < 0.7 and _jaccard(page, near) >= 0.9
    params = "fineweb,bands=40,rows=1"
    assert set(_dropped(_dataset([page, far, near], blocks=1), params)) == {1, 2}
    assert set(_dropped(_dataset([page, far, near], blocks=1), params, jaccard=0.8)) == {2}


def test_connected_components_match_union_find(ray_local):
    """Random graph plus a 3000-node path (many rounds), over 3 partitions, against a plain union-find."""
    import ray

    rng = np.random.default_rng(0)
    a = rng.integers(0, 5000, 3000, dtype=np.uint64)
    b = rng.integers(0, 5000, 3000, dtype=np.uint64)
    path = np.arange(10_000, 13_000, dtype=np.uint64)
    a, b = np.concatenate([a, path[1:]]), np.concatenate([b, path[:-1]])
    keep = a != b
    a, b = np.maximum(a, b)[keep], np.minimum(a, b)[keep]
    blocks = [ray.put({"a": a[i::4], "b": b[i::4]}) for i in range(4)]
    result = [ray.get(r) for r in connected_components(blocks, partitions=3)]
    got = {int(x): int(y) for r in result for x, y in zip(r["a"], r["b"], strict=True)}

    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        rx, ry = find(x), find(y)
        parent[max(rx, ry)] = min(rx, ry)
    expected = {x: find(x) for x in parent if find(x) != x}
    assert got == expected


class _Counted:
    """ray.remote(fn) that adds each task's num_returns (the object refs the driver creates) to `created`."""

    def __init__(self, remote_fn, created: list[int], returns: int = 1):
        self.remote_fn, self.created, self.returns = remote_fn, created, returns

    def options(self, **options):
        return _Counted(self.remote_fn.options(**options), self.created, options.get("num_returns", 1))

    def remote(self, *args, **kwargs):
        self.created.append(self.returns)
        return self.remote_fn.remote(*args, **kwargs)


def test_two_level_shuffle_bounds_the_driver_refs_and_gives_the_same_rows(ray_local, monkeypatch):
    """20 document blocks + 4 moved blocks over 40 partitions: one level creates B*P + 2P = 1040 refs, two levels
    (S = 7 super-partitions) 408, within 2*B*S + 4P; every reduce task gets the same rows in the same order
    (`_survivor_of` keeps its input order). At 10 TB (B ~ 1e4, P ~ 1.4e4) two levels need < 2.5e6 refs, not 1.4e8."""
    import ray

    from pipelines.dedup import fuzzy

    rng = np.random.default_rng(0)
    nodes = rng.permutation(np.arange(6000, dtype=np.uint64)) | fuzzy.NEW
    docs = [ray.put(pa.table({"node": n, "id": [f"d{x}" for x in n]})) for n in np.array_split(nodes, 20)]
    indexed = rng.random(800) < 0.2  # documents dropped for an older index: left out
    moved = [
        ray.put(pa.table({"node": n, "cluster": n // np.uint64(3), "indexed": i}))
        for n, i in zip(np.array_split(nodes[:800] & ~fuzzy.NEW, 4), np.array_split(indexed, 4), strict=True)
    ]
    sources = [(docs, fuzzy._keyed, {"key": "node", "cols": ("node", "id")}), (moved, fuzzy._moved_rows, {})]

    created: list[int] = []
    remote = ray.remote
    monkeypatch.setattr(ray, "remote", lambda fn: _Counted(remote(fn), created))
    one, _ = fuzzy._shuffle(sources, fuzzy._survivor_of, 40)
    assert sum(created) == fuzzy.shuffle_refs([20, 4], 40) == 24 * 40 + 2 * 40
    created.clear()
    monkeypatch.setattr(fuzzy, "ONE_LEVEL_REFS", 0)
    two, _ = fuzzy._shuffle(sources, fuzzy._survivor_of, 40)
    assert sum(created) == fuzzy.shuffle_refs([20, 4], 40) == 408 <= 2 * 24 * 7 + 4 * 40
    monkeypatch.undo()

    for a, b in zip(ray.get(one), ray.get(two), strict=True):
        assert a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)
    assert sum(len(ray.get(r)["node"]) for r in two) == 6000 - indexed.sum()
    assert fuzzy.shuffle_refs([10_000], 14_000) < 2.5e6  # one level: 1.4e8


def test_two_level_shuffle_same_dedup_and_index(ray_local, planted, monkeypatch, tmp_path):
    """Forced to two levels (10 partitions: 4 super-partitions of 3, 3, 3, 1; 7 blocks: groups of 4 and 3), fuzzy
    dedup with and without the Jaccard check, save_index and dedup against the index give the same tables and
    the same index files, byte for byte, as one level."""
    from pipelines.dedup import fuzzy

    texts, cluster_of, n_originals = planted
    texts = texts[:150] + [t for t, c in zip(texts[n_originals:], cluster_of[n_originals:], strict=True) if c < 150]
    params = parse_spec("fineweb")
    new = texts[140:] + [texts[i] for i in range(0, 40, 3)]

    def run(folder) -> list[pa.Table]:
        sigs = signature_table(_dataset(texts, blocks=7), params)
        dropped = fuzzy_duplicates(None, params, sigs=sigs, num_partitions=10).materialize()
        save_index(sigs, dropped, tmp_path / folder, num_partitions=10)
        ds = _dataset(new, blocks=7, ids=[f"new-{i}" for i in range(len(new))])
        return [
            _arrow(dropped),
            _arrow(fuzzy_duplicates(_dataset(texts, blocks=7), params, jaccard=0.8, num_partitions=10)),
            _arrow(fuzzy_duplicates(ds, params, index=tmp_path / folder, num_partitions=10)),
        ]

    one = run("one")
    monkeypatch.setattr(fuzzy, "ONE_LEVEL_REFS", 0)
    two = run("two")
    assert all(a.equals(b) for a, b in zip(one, two, strict=True))
    assert len(one[0]) > 20 and len(one[2]) >= 10  # near-duplicates and copies of indexed documents found
    files = sorted(f.relative_to(tmp_path / "one") for f in (tmp_path / "one").rglob("*.parquet"))
    assert len(files) == 20
    assert files == sorted(f.relative_to(tmp_path / "two") for f in (tmp_path / "two").rglob("*.parquet"))
    assert all((tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes() for f in files)


def test_hashed_nodes_are_stable_and_below_2_63():
    nodes = hashed_nodes(["a", "b", "a", "ü"])
    assert nodes[0] == nodes[2] and nodes[0] != nodes[1] and (nodes < np.uint64(1 << 63)).all()


@pytest.mark.slow
def test_curate_drops_near_duplicates_and_contamination(ray_local, planted, tmp_path):
    """curate with fuzzy_dedup and decontaminate_against: reasons, survivors, exact counts, same output for 1 or 2
    workers."""
    import pyarrow.parquet as pq

    from pipelines import curate
    from pipelines.core.artifacts import read_manifest

    texts, cluster_of, n_originals = planted
    keep = list(range(100)) + [i for i in range(n_originals, len(texts)) if cluster_of[i] < 100]
    gsm8k = shared_data("gsm8k", "test.jsonl")
    questions = [json.loads(line)["question"] for line in open(gsm8k)][:5]
    rows = [{"id": f"doc-{i}", "text": texts[i]} for i in keep]
    rows += [{"id": f"math-{k}", "text": texts[150 + k] + "\n\nQuestion: " + q} for k, q in enumerate(questions)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "web.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "c.yaml").write_text(
        "# test\n# nanoforge curate --config c.yaml\nfilters: []\nlanguage_id: false\npii: false\n"
    )
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        curate.main(
            [
                "--config",
                str(tmp_path / "c.yaml"),
                "--input_paths",
                str(tmp_path / "in"),
                "--output_dir",
                str(out),
                "--fuzzy_dedup",
                "fineweb",
                "--decontaminate_against",
                f"gsm8k={gsm8k}:question",
                "--num_workers",
                str(workers),
                "--chunk_bytes",
                "200000",
            ]
        )
        counts = read_manifest(out)["counts"]
        assert counts["input"] == len(rows) == counts["kept"] + sum(counts["rejected"].values())
        rejected = pq.read_table(out / "rejected").to_pylist()
        outputs.append(
            (
                sorted(pq.read_table(out / "documents")["id"].to_pylist()),
                sorted((r["id"], r["reason"], r["duplicate_of"]) for r in rejected),
            )
        )
        assert (out / "lsh_index" / "buckets").is_dir()
    kept, rejected = outputs[0]
    assert outputs[0] == outputs[1]
    reasons = {i: (reason, of) for i, reason, of in rejected}
    assert all(reasons[f"math-{k}"] == ("contaminated:gsm8k", None) for k in range(5))
    copies = [f"doc-{i}" for i in keep if i >= n_originals]
    assert sum(reasons.get(c, ("",))[0] == "fuzzy_duplicate" for c in copies) >= 0.9 * len(copies)
    for i in keep:
        if f"doc-{i}" in reasons and i >= n_originals:  # a copy names the first document of its cluster
            assert reasons[f"doc-{i}"][1] == f"doc-{cluster_of[i]}" or cluster_of[i] in {
                int(x[4:]) for x in reasons if x.startswith("doc-")
            }


# ---------------------------------------------------------------------------------------------------------------
# curate: the band keys are computed in pass 1 and stored in the chunk checkpoints


def _curate_chunks(folder, fuzzy_dedup: str) -> list[str]:
    """curate's passes 1 and 3 on the cs336 fixtures (+ a kept document without a single 5-gram), the work
    directory left in place; returns the chunk checkpoints."""
    from pipelines import curate
    from pipelines.curation import chunks

    root = shared_data("cs336_assignment4_fixtures")
    extra = folder / "in" / "short.txt"
    extra.parent.mkdir(parents=True, exist_ok=True)
    extra.write_text("Too short here.")
    (folder / "c.yaml").write_text(
        "# test\n# nanoforge curate --config c.yaml\nfilters: []\nlanguage_id: false\npii: false\n"
    )
    argv = ["--config", str(folder / "c.yaml"), "--fuzzy_dedup", fuzzy_dedup, "--output_dir", str(folder / "out")]
    argv += [
        "--input_paths",
        str(root / "documents_with_fuzzy_duplicates"),
        str(root / "documents_with_line_duplicates"),
    ]
    cfg = curate.parse_args([*argv, str(extra.parent)])
    with pytest.MonkeyPatch.context() as m:  # pass 1 (and 3) only: the tests run the fuzzy step themselves
        m.setattr(curate, "global_steps", lambda cfg: [])
        curate.run(cfg, curate.check_config(cfg), str(folder / "out"))
    return chunks.chunk_files(str(folder / "out" / ".work"))


@pytest.fixture(scope="module")
def fineweb_chunks(ray_local, tmp_path_factory) -> list[str]:
    return _curate_chunks(tmp_path_factory.mktemp("fuzzybands"), "fineweb")


@pytest.mark.timeout(120)
def test_chunk_checkpoints_carry_band_keys_with_fuzzy_dedup_only(ray_local, fineweb_chunks, tmp_path):
    """With fuzzy dedup on, pass 1 stores each kept candidate's LSH band keys (those of `signature_table`) and the
    spec in the footer; null for a candidate without an n-gram and for rejected rows. Off: neither."""
    import dataclasses

    import pyarrow.parquet as pq

    from pipelines.curation.chunks import footers

    params = parse_spec("fineweb")
    assert [f["minhash"] for f in footers(fineweb_chunks)] == [dataclasses.asdict(params)] * len(fineweb_chunks)
    table = pa.concat_tables(pq.read_table(f) for f in fineweb_chunks)
    kept = table.filter(pa.compute.equal(table["status"], "kept"))
    sigs = _arrow(signature_table(_dataset(kept["text"].to_pylist(), blocks=1, ids=kept["id"].to_pylist()), params))
    stored = {i: b for i, b in zip(table["id"].to_pylist(), table["bands"].to_pylist(), strict=True) if b}
    assert stored == dict(zip(sigs["id"].to_pylist(), sigs["keys"].to_pylist(), strict=True)) and len(stored) >= 8
    bands_of = dict(zip(table["id"].to_pylist(), table["bands"].to_pylist(), strict=True))
    assert bands_of["short.txt:1"] is None and all(
        bands_of[i] is None for i in table.filter(pa.compute.not_equal(table["status"], "kept"))["id"].to_pylist()
    )

    off = _curate_chunks(tmp_path, "none")
    assert len(off) == len(fineweb_chunks)
    assert all("bands" not in pq.read_schema(f).names for f in off)
    assert all("minhash" not in f for f in footers(off))


def _copy_chunks(files: list[str], folder, edit) -> list[str]:
    """The checkpoints rewritten under `folder/.work/chunks/` by edit(table, footer dict) -> (table, footer)."""
    import json

    import pyarrow.parquet as pq

    (folder / ".work" / "chunks").mkdir(parents=True)
    out = []
    for f in files:
        table = pq.read_table(f)
        table, footer = edit(table, json.loads(table.schema.metadata[b"nanoforge"]))
        out.append(str(folder / ".work" / "chunks" / f.rsplit("/", 1)[1]))
        pq.write_table(table.replace_schema_metadata({"nanoforge": json.dumps(footer)}), out[-1])
    return out


def _fuzzy_step(files: list[str], spec: str = "fineweb") -> tuple[list[tuple], dict]:
    """fuzzy.curate_step's rejections (sorted rows) and the LSH index it saved (sorted rows)."""
    import pyarrow.parquet as pq

    from pipelines.dedup import fuzzy

    cfg = type("Cfg", (), {"fuzzy_dedup": spec, "fuzzy_dedup_index": ""})()
    rows = sorted(tuple(r.values()) for r in fuzzy.curate_step(files, cfg).take_all())
    index = files[0].rsplit("/", 3)[0] + "/lsh_index"
    return rows, {d: sorted(map(str, pq.read_table(f"{index}/{d}").to_pylist())) for d in ("buckets", "ids")}


@pytest.mark.timeout(180)
def test_fuzzy_step_same_rejections_from_band_keys_without_text(ray_local, fineweb_chunks, tmp_path, monkeypatch):
    """The global step from the stored keys, with the text column gone from the checkpoints, rejects the same
    documents with the same survivors and saves the same LSH index as the pass over the text (checkpoints without
    keys, as an older curate wrote them); keys of another spec are not used."""
    from pipelines.dedup import fuzzy

    calls = []
    monkeypatch.setattr(fuzzy, "signature_table", lambda *a, **k: calls.append(1) or signature_table(*a, **k))
    no_text = _copy_chunks(fineweb_chunks, tmp_path / "keys", lambda t, f: (t.drop_columns(["text"]), f))
    from_keys = _fuzzy_step(no_text)
    assert not calls  # no pass over the text (and there is none to read)
    old = _copy_chunks(
        fineweb_chunks,
        tmp_path / "old",
        lambda t, f: (t.drop_columns(["bands"]), {k: f[k] for k in f if k != "minhash"}),
    )
    from_text = _fuzzy_step(old)
    assert calls == [1]
    assert from_keys == from_text
    assert {r[-1] for r in from_keys[0]} == {"rails_mit_license.txt:1", "doc1.txt:1"} and len(from_keys[0]) == 2

    # chunks whose keys were made with another spec: the step takes the text (a rerun with a changed spec)
    other = _copy_chunks(
        fineweb_chunks, tmp_path / "other", lambda t, f: (t, {**f, "minhash": {**f["minhash"], "seed": 2}})
    )
    assert _fuzzy_step(other) == from_text and calls == [1, 1]
