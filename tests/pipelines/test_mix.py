"""mix: token fractions per phase, epoch caps, shortfalls, determinism, Megatron .bin/.idx read back into tokens.

Length (~520 lines): the plan in memory and on workers, the end-to-end stage and the files it writes share the real
corpora fixtures of this one file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datapaths import shared_data

from pipelines import mix
from pipelines.blending.plan import Phase, ShortfallError, plan_blend, read_megatron, shuffle_key, write_megatron
from pipelines.core.config import ConfigError
from pipelines.scoring.buckets import bucket_labels

PHASES = [
    Phase("diverse", 0.6, {"web": 0.6, "math": 0.2, "code": 0.2}),
    Phase("quality", 0.4, {"web": 0.2, "math": 0.5, "code": 0.3}),
]


def synthetic_sources(seed: int = 0) -> dict[str, np.ndarray]:
    """Tokens per document: many documents of 50-2000 tokens, as in a real corpus."""
    rng = np.random.default_rng(seed)
    return {
        "web": rng.integers(50, 2000, 3000),
        "math": rng.integers(50, 800, 2000),
        "code": rng.integers(100, 1500, 800),
    }


def test_plan_hits_every_phase_fraction_within_half_a_percent():
    tokens = synthetic_sources()
    picks, stats = plan_blend(tokens, PHASES, 2_000_000, {s: 4.0 for s in tokens}, seed=0)
    for p, phase in enumerate(PHASES):
        got = stats["phases"][phase.name]
        assert abs(got["achieved_tokens"] - got["target_tokens"]) / got["target_tokens"] < 0.005
        for s, row in got["sources"].items():
            assert abs(row["achieved_fraction"] - row["target_fraction"]) < 0.005, (phase.name, s)
            # the picks are what the stats say: tokens of the documents picked for this phase
            mine = picks[s]["phase"] == p
            assert tokens[s][picks[s]["doc"][mine]].sum() == row["achieved_tokens"]
            # cuts at the document nearest each cumulative target: a phase is off by at most one document
            assert abs(row["achieved_tokens"] - row["target_tokens"]) <= tokens[s].max()


def test_epochs_run_across_phases_and_repeat_a_document_only_after_the_whole_source():
    tokens = synthetic_sources()
    picks, stats = plan_blend(tokens, PHASES, 2_000_000, {s: 4.0 for s in tokens}, seed=0)
    # code: 800 docs ~ 640k tokens, target 0.2*1.2M + 0.3*0.8M = 480k -> within epoch 0
    assert set(picks["code"]["epoch"]) == {0}
    assert stats["sources"]["code"]["epochs"] == pytest.approx(480_000 / tokens["code"].sum(), abs=0.01)
    math = picks["math"]  # math: ~850k tokens available, 0.2*1.2M + 0.5*0.8M = 640k: within one epoch
    assert len(np.unique(math["doc"])) == len(math["doc"])  # no repeats within the first epoch
    # a source pushed past one epoch: every document once (epoch 0), then a fresh permutation (epoch 1)
    small = {"web": tokens["web"], "math": tokens["math"][:600], "code": tokens["code"]}  # ~255k tokens
    picks, stats = plan_blend(small, PHASES, 2_000_000, {s: 4.0 for s in small}, seed=0)
    m = picks["math"]
    assert 2 < stats["sources"]["math"]["epochs"] <= 4
    assert np.all(np.diff(m["epoch"]) >= 0) and np.all(np.diff(m["phase"]) >= 0)  # one stream, phases in order
    for e in range(int(m["epoch"].max())):  # every complete epoch is a permutation of all 600 documents
        assert sorted(m["doc"][m["epoch"] == e]) == list(range(600))
    assert np.bincount(m["doc"]).max() <= np.ceil(stats["sources"]["math"]["epochs"])


def test_a_source_too_small_under_its_cap_is_an_error_or_a_reported_shortfall():
    tokens = synthetic_sources()
    tokens["math"] = tokens["math"][:100]  # ~40k tokens; the phases want 640k -> 16 epochs
    caps = {"web": 4.0, "math": 2.0, "code": 4.0}
    with pytest.raises(ShortfallError, match=r"math: needs 640,000 tokens = .* epochs of .* max_epochs 2.0"):
        plan_blend(tokens, PHASES, 2_000_000, caps, seed=0)
    picks, stats = plan_blend(tokens, PHASES, 2_000_000, caps, seed=0, on_shortfall="report")
    available = tokens["math"].sum()
    assert stats["sources"]["math"]["achieved_tokens"] <= 2 * available  # the cap holds
    assert stats["sources"]["math"]["epochs"] <= 2.0
    assert stats["sources"]["math"]["shortfall_tokens"] == 640_000 - 2 * available
    assert np.bincount(picks["math"]["doc"]).max() <= 2
    assert stats["sources"]["web"]["shortfall_tokens"] == 0


def test_the_plan_and_the_shuffle_depend_only_on_the_seed():
    tokens = synthetic_sources()
    caps = {s: 4.0 for s in tokens}
    a, _ = plan_blend(tokens, PHASES, 1_000_000, caps, seed=1)
    b, _ = plan_blend(tokens, PHASES, 1_000_000, caps, seed=1)
    c, _ = plan_blend(tokens, PHASES, 1_000_000, caps, seed=2)
    assert all(np.array_equal(a[s]["doc"], b[s]["doc"]) for s in tokens)
    assert not np.array_equal(a["web"]["doc"], c["web"]["doc"])
    keys = np.arange(1000, dtype=np.uint64)
    assert np.array_equal(shuffle_key(keys, 1, "diverse", "web", 0), shuffle_key(keys, 1, "diverse", "web", 0))
    assert len(np.unique(shuffle_key(keys, 1, "diverse", "web", 0))) == 1000  # a bijection of the keys
    assert not np.array_equal(shuffle_key(keys, 1, "diverse", "web", 0), shuffle_key(keys, 2, "diverse", "web", 0))


@pytest.mark.parametrize("dtype, vocab", [(np.uint16, 500), (np.int32, 100_000)])
def test_megatron_files_match_datatrove_byte_for_byte(tmp_path, dtype, vocab):
    from datatrove.pipeline.tokens.megatron_tokenizer import MegatronTokenizedFile

    rng = np.random.default_rng(0)
    docs = [rng.integers(0, vocab, rng.integers(1, 50)).tolist() for _ in range(37)]
    theirs = MegatronTokenizedFile(str(tmp_path), "theirs", token_size=np.dtype(dtype).itemsize)
    for d in docs:
        theirs.write(d)
    theirs.close()
    write_megatron(tmp_path / "ours", [len(d) for d in docs], np.concatenate(docs), dtype)
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"ours{ext}").read_bytes() == (tmp_path / f"theirs{ext}").read_bytes()
    assert [x.tolist() for x in read_megatron(tmp_path / "ours")] == docs


# --- the stage, end to end on real text ----------------------------------------------------------------------------


def write_documents(root: Path, rows: list[dict]) -> Path:
    """A documents artifact as curate/quality write it (documents/part-*.parquet), in two files."""
    (root / "documents").mkdir(parents=True)
    table = pa.Table.from_pylist([{"url": None, "metadata": "{}", "lang": "en", **r} for r in rows])
    half = len(rows) // 2
    pq.write_table(table.slice(0, half), root / "documents" / "part-00000.parquet")
    pq.write_table(table.slice(half), root / "documents" / "part-00001.parquet")
    return root


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    """Real text: C4 pages with quality buckets (as `quality` writes them) and math (GSM8K, MATH-500)."""
    tmp = tmp_path_factory.mktemp("corpora")
    c4 = [json.loads(x)["text"] for x in shared_data("llamafactory_demo", "c4_demo.jsonl").open()]
    buckets = np.arange(len(c4)) % 20  # 15 pages per bucket: 30 are High or Medium-High
    web = [
        {"id": f"c4-{i}", "text": t, "source": "c4", "quality_bucket": int(b), "quality_label": str(label)}
        for i, (t, b, label) in enumerate(zip(c4, buckets, bucket_labels(buckets), strict=True))
    ]
    gsm = [json.loads(x) for x in shared_data("gsm8k", "test.jsonl").open()][:600]
    math = [json.loads(x) for x in shared_data("math500", "test.jsonl").open()]
    maths = [
        {"id": f"gsm-{i}", "text": r["question"] + "\n" + r["answer"], "source": "gsm8k"} for i, r in enumerate(gsm)
    ]
    maths += [{"id": r["unique_id"], "text": r["problem"] + "\n\n" + r["solution"], "source": "math500"} for r in math]
    return {"web": write_documents(tmp / "web", web), "math": write_documents(tmp / "math", maths)}


def mix_yaml(path: Path, corpora: dict[str, Path], tokenizer: Path, **overrides) -> Path:
    config = {
        "input_paths": [str(corpora["web"]), str(corpora["math"])],
        "sources": [
            {"name": "web_high", "input": 0, "labels": ["High", "Medium-High"], "max_epochs": 2},
            {"name": "web_rest", "input": 0, "labels": ["Medium", "Medium-Low", "Low"]},
            {"name": "math", "input": 1},
        ],
        "phases": [
            {"name": "phase1", "fraction": 0.6, "weights": {"web_high": 0.1, "web_rest": 0.6, "math": 0.3}},
            {"name": "phase2", "fraction": 0.4, "weights": {"web_high": 0.5, "web_rest": 0.1, "math": 0.4}},
        ],
        "total_tokens": 250_000,
        "tokenizer": str(tokenizer),
        "eos_token": "</s>",
        "docs_per_shard": 60,
        "seed": 3,
        **overrides,
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.parent != root
    } | {"blend.json": (root / "blend.json").read_bytes()}


@pytest.mark.slow
def test_mix_builds_phased_shuffled_tokenized_blends(ray_local, tmp_path, corpora, tiny_base):
    from tokenizers import Tokenizer

    out = tmp_path / "blend"
    config = mix_yaml(tmp_path / "mix.yaml", corpora, tiny_base)
    assert mix.main(["--config", str(config), "--output_dir", str(out)]) == 0
    blend = json.loads((out / "blend.json").read_text())
    tok = Tokenizer.from_file(str(tiny_base / "tokenizer.json"))
    eos = tok.token_to_id("</s>")
    everything = pa.concat_tables([pq.read_table(out / f) for p in blend["phases"].values() for f in p["shards"]])
    largest = everything.to_pandas().groupby("blend_source")["num_tokens"].max()

    for phase in blend["phases"].values():
        shards = [pq.read_table(out / f) for f in phase["shards"]]
        assert len(shards) >= 2 and all(len(s) <= 60 for s in shards)
        table = pa.concat_tables(shards).to_pandas()
        # blend.json tells the truth about the shards
        assert phase["achieved_tokens"] == table["num_tokens"].sum()
        for source, row in phase["sources"].items():
            assert table.loc[table["blend_source"] == source, "num_tokens"].sum() == row["achieved_tokens"]
        # every source within one document of its phase target (cuts are at the document nearest each cumulative
        # target). C4 pages run to 5k tokens here, too coarse for a 0.5% share test: the plan tests cover that.
        for source, row in phase["sources"].items():
            assert abs(row["achieved_tokens"] - row["target_tokens"]) <= largest[source]
        # shuffled: the sources are interleaved, not in runs
        runs = (table["blend_source"] != table["blend_source"].shift()).sum()
        assert runs > len(table) / 3
        # the Megatron files hold exactly the tokens of the Parquet rows, in the same order
        for f in phase["shards"]:
            docs = pq.read_table(out / f).column("text").to_pylist()
            sequences = read_megatron(out / f.removesuffix(".parquet"))
            assert [s.tolist() for s in sequences] == [
                e.ids + [eos] for e in tok.encode_batch(docs, add_special_tokens=False)
            ]
        assert phase["megatron_data_path"].split()[1::2] == [f.removesuffix(".parquet") for f in phase["shards"]]

    # bucket subsets and the epoch cap: web_high (30 High/Medium-High pages, ~52k tokens) is upsampled to ~1.25
    # epochs (65k tokens), at most 2
    high = blend["sources"]["web_high"]
    assert high["buckets"] == [18, 19] and high["available_docs"] == 30 and 1 < high["epochs"] <= 2
    web_high = everything.filter(pa.compute.equal(everything["blend_source"], "web_high")).to_pandas()
    assert set(web_high["quality_label"]) <= {"High", "Medium-High"}
    assert web_high["id"].value_counts().max() <= 2 and set(web_high["epoch"]) == {0, 1}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["input_docs"] == 300 + 1100  # every web page is in exactly one subset
    assert (out / "report.md").read_text().count("| web_high |") == 3 and (out / "mixture.png").stat().st_size > 0

    # byte-identical for the same seed, however the work is split into batches
    again = tmp_path / "again"
    assert mix.main(["--config", str(config), "--output_dir", str(again), "--batch_size", "64"]) == 0
    assert files(again) == files(out)

    # token-id Parquet instead of .bin/.idx: the same tokens, in an input_ids column
    as_parquet = tmp_path / "parquet"
    assert mix.main(["--config", str(config), "--output_dir", str(as_parquet), "--token_format", "parquet"]) == 0
    first = blend["phases"]["phase1"]["shards"][0]
    ids = pq.read_table(as_parquet / first).column("input_ids").to_pylist()
    assert ids == [s.tolist() for s in read_megatron(out / first.removesuffix(".parquet"))]
    assert not list(as_parquet.rglob("*.bin"))


def test_mix_config_errors_say_what_to_fix(tmp_path, corpora):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())  # a small tokenizer with the </s> separator, no model build needed
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["a tiny corpus for a tiny tokenizer"], trainers.BpeTrainer(special_tokens=["</s>"]))
    tok.save(str(tmp_path / "tokenizer.json"))

    def run(**overrides):
        return mix.main(
            ["--config", str(mix_yaml(tmp_path / "m.yaml", corpora, tmp_path / "tokenizer.json", **overrides))]
        )

    with pytest.raises(ConfigError, match="sum to 1"):
        run(phases=[{"name": "p", "fraction": 0.5, "weights": {"math": 1}}])
    with pytest.raises(ConfigError, match="over sources"):
        run(phases=[{"name": "p", "fraction": 1.0, "weights": {"books": 1}}])
    with pytest.raises(ConfigError, match="no quality_bucket column; run `nanoforge quality` first"):
        run(
            sources=[{"name": "m", "input": 1, "labels": ["High"]}],
            phases=[{"name": "p", "fraction": 1, "weights": {"m": 1}}],
        )
    with pytest.raises(ConfigError, match="not an index into input_paths"):
        run(sources=[{"name": "m", "input": 5}])
    with pytest.raises(ConfigError, match="not in the vocabulary"):
        run(eos_token="<|endoftext|>")


# --- the plan on workers: the driver gets sums and histograms, never the documents ---------------------------------


def test_the_plan_found_by_workers_is_the_plan_in_memory(ray_local, tmp_path, monkeypatch):
    """mix plans from per-source sums and narrowing histograms that Ray tasks compute over the prepared files; the
    cuts it finds pick the same documents, phases and epochs as the in-memory plan over every document, and the
    driver never reads a prepared file nor receives more than a bounded number of rows."""
    from pipelines.blending import search
    from pipelines.blending.plan import assign, plan_cuts, resolve_in_memory
    from pipelines.core import storage

    rng = np.random.default_rng(5)
    tokens = synthetic_sources()
    tokens["math"] = tokens["math"][:600]  # pushed past one epoch, under a cap of 2.5 (a shortfall, reported)
    keys = {s: rng.integers(0, 2**64, len(t), dtype=np.uint64) for s, t in tokens.items()}
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    rows = pa.table(
        {
            "blend_source": [s for s in tokens for _ in tokens[s]],
            "key": pa.array(np.concatenate(list(keys.values())), pa.uint64()),
            "num_tokens": np.concatenate(list(tokens.values())).astype(np.int64),
        }
    )
    shuffled = rows.take(rng.permutation(len(rows)))
    for i in range(4):  # four files, each holding every source
        pq.write_table(shuffled.slice(i * 1100, 1100), prepared / f"{i}.parquet")
    caps = {"web": 4.0, "math": 2.5, "code": 4.0}

    def no_driver_reads(path, *args, **kwargs):
        raise AssertionError(f"the driver read {path}")

    monkeypatch.setattr(storage, "read_table", no_driver_reads)  # Ray's workers are other processes
    monkeypatch.setattr(search, "GATHER_DOCS", 40)  # force histogram rounds on these few thousand documents,
    monkeypatch.setattr(search, "SEARCH_BITS", 4)  # of 16 bins: several of them
    log = {"rounds": 0, "max_rows": 0}
    sums = search.totals(str(prepared), 7, list(tokens), log)
    assert sums == {s: (len(t), int(t.sum())) for s, t in tokens.items()}
    resolve = search.resolve_on_workers(str(prepared), 7, {s: n for s, (n, _) in sums.items()}, log)
    cuts, stats = plan_cuts(sums, PHASES, 2_000_000, caps, resolve, on_shortfall="report")
    reference, ref_stats = plan_cuts(
        sums, PHASES, 2_000_000, caps, resolve_in_memory(keys, tokens, 7), on_shortfall="report"
    )
    assert stats == ref_stats
    for s in tokens:
        ours, theirs = assign(keys[s], 7, s, cuts[s]), assign(keys[s], 7, s, reference[s])
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True)), s
    assert stats["sources"]["math"]["shortfall_tokens"] > 0 and 2 < stats["sources"]["math"]["epochs"] <= 2.5
    assert log["rounds"] >= 4  # totals, histograms, documents read whole
    assert log["max_rows"] <= 3 * 3 * (16 + 40)  # bounded by queries (a cap + 2 phases a source) x (bins + docs)
    assert log["max_rows"] < len(rows) / 8  # not the corpus


def test_a_document_id_twice_in_a_source_is_an_error(tmp_path):
    from pipelines.blending.ops import SHARD_SCHEMA, write_bucket

    folder = tmp_path / "staged" / "phase=0" / "bucket=0"
    folder.mkdir(parents=True)
    row = {name: None for name in SHARD_SCHEMA.names} | {"id": "a", "blend_source": "web", "epoch": 0}
    row |= {"num_tokens": 3, "key": 11, "order": 5}
    pq.write_table(pa.Table.from_pylist([row, row | {"text": "other"}]), folder / "x.parquet")
    with pytest.raises(ConfigError, match="source web: document id a appears twice"):
        write_bucket({"phase": 0, "bucket": 0}, str(tmp_path / "staged"), str(tmp_path / "out"), ["p"], 10, None, "")


# --- the passes as Ray tasks write what the Ray Data passes wrote --------------------------------------------------


def ray_data_blend(config: Path, out: Path) -> tuple[dict, list[dict], dict]:
    """The shards as mix wrote them with Ray Data passes (before issue 18): map_batches + write_parquet to prepare,
    a partitioned write_parquet to route, flat_map over buckets to write, on the same operators and plan."""
    import ray

    from pipelines.blending import ops
    from pipelines.blending.plan import token_dtype

    cfg = mix.parse_args(["--config", str(config)])
    sources, phases = mix.check(cfg)
    tok = ops.load_tokenizer(cfg.tokenizer)
    eos_id = tok.token_to_id(cfg.eos_token)

    def prepare_files(batch: dict):
        for path, index in zip(batch["file"], batch["source"], strict=True):
            s = sources[int(index)]
            for records in pq.ParquetFile(path).iter_batches(batch_size=cfg.batch_size):
                yield ops.prepare_batch(
                    pa.Table.from_batches([records]), s["name"], s["buckets"], "text", cfg.tokenizer, eos_id
                )

    files = [
        {"file": str(f), "source": i}
        for i, s in enumerate(sources)
        for f in sorted(Path(s["path"]).rglob("*.parquet"))
    ]
    prepared, staged = str(out / "prepared"), str(out / "staged")
    ray.data.from_items(files, override_num_blocks=len(files)).map_batches(prepare_files, batch_size=1).write_parquet(
        prepared
    )
    route_plan, _, _ = mix.plan(cfg, sources, phases, prepared)
    ray.data.read_parquet(prepared).map_batches(
        ops.route_batch, fn_kwargs=route_plan, batch_size=cfg.batch_size, batch_format="pyarrow"
    ).write_parquet(staged, partition_cols=["phase", "bucket"])
    buckets = [{"phase": p, "bucket": b} for p, n in enumerate(route_plan["buckets"]) for b in range(n)]
    kwargs = {"staged": staged, "out": str(out), "phases": route_plan["phases"], "docs_per_shard": cfg.docs_per_shard}
    kwargs |= {"token_format": cfg.token_format, "dtype": token_dtype(tok.get_vocab_size()).__name__}
    ray.data.from_items(buckets).flat_map(ops.write_bucket, fn_kwargs=kwargs).take_all()
    return route_plan, buckets, kwargs


def test_mix_tasks_write_the_shards_the_ray_data_passes_wrote(ray_local, tmp_path, corpora, tiny_base):
    """Real text, two phases, bucket subsets and a second epoch: every shard (Parquet and .bin/.idx) is the same bytes
    as the Ray Data passes wrote, so the blend for a seed and its tokens did not change with the task passes."""
    config = mix_yaml(tmp_path / "mix.yaml", corpora, tiny_base)
    assert mix.main(["--config", str(config), "--output_dir", str(tmp_path / "tasks")]) == 0
    route_plan, buckets, kwargs = ray_data_blend(config, tmp_path / "ray_data")

    def shards(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("phase*/*")) if p.is_file()}

    ours, theirs = shards(tmp_path / "tasks"), shards(tmp_path / "ray_data")
    assert len(ours) > 6 and {k for k in ours if k.endswith(".bin")}  # Parquet + .bin/.idx, both phases
    assert ours == theirs

    # routed in chunks of 50 documents (a staged file per prepared file, a row group per chunk and bucket), in this
    # process: the same shards
    from pipelines.blending.ops import route_file, write_bucket

    chunks = tmp_path / "chunks"
    prepared = sorted((tmp_path / "ray_data" / "prepared").glob("*.parquet"))
    for f in prepared:
        assert route_file(str(f), str(chunks / "staged"), rows=50, **route_plan) > 0
    staged = list((chunks / "staged").rglob("*.parquet"))
    assert len(staged) == len(prepared)
    assert sum(pq.ParquetFile(f).num_row_groups for f in staged) > 2 * len(theirs)
    for b in buckets:
        write_bucket(b, **{**kwargs, "staged": str(chunks / "staged"), "out": str(chunks)})
    assert shards(chunks) == ours


# --- files written: O(input files + output shards), never a file per route chunk -----------------------------------


def test_mix_writes_files_per_input_file_and_output_shard_not_per_chunk(ray_local, tmp_path, monkeypatch):
    """Issue 14: 4 input files routed 10 documents at a time (8 chunks each) into 2 phases of ~9 buckets each. A
    staged file per (chunk, bucket) made hundreds of files here (millions at 10 TB); now every pass writes a file per
    input file (prepared, staged) or per output shard, and the blend is the same bytes as routed in one chunk."""
    from pipelines.core import storage

    (tmp_path / "web" / "documents").mkdir(parents=True)
    rows = [{"id": f"d-{i}", "text": "word " * (20 + i * 7 % 50), "source": "web"} for i in range(320)]
    for k in range(4):
        pq.write_table(pa.Table.from_pylist(rows[k * 80 : (k + 1) * 80]), tmp_path / "web/documents" / f"{k}.parquet")
    config = {
        "input_paths": [str(tmp_path / "web")],
        "sources": [{"name": "web", "input": 0}],
        "phases": [{"name": p, "fraction": 0.5, "weights": {"web": 1}} for p in ("p1", "p2")],
        "total_tokens": 25_000,  # ~1.4 epochs of the ~18k estimated tokens
        "docs_per_shard": 30,
    }
    (tmp_path / "mix.yaml").write_text(json.dumps(config))
    work, remove = {}, storage.remove

    def counting_remove(path):  # the driver removes .work/ when the shards are written: count it first
        if storage.basename(path) == ".work":
            for step in ("prepared", "staged"):
                files = sorted(Path(path, step).rglob("*.parquet"))
                work[step] = (len(files), sum(pq.ParquetFile(f).num_row_groups for f in files))
        remove(path)

    monkeypatch.setattr(storage, "remove", counting_remove)
    argv = ["--config", str(tmp_path / "mix.yaml")]
    assert mix.main([*argv, "--output_dir", str(tmp_path / "chunked"), "--route_rows", "10"]) == 0
    chunked = work.copy()
    assert mix.main([*argv, "--output_dir", str(tmp_path / "whole")]) == 0

    blend = json.loads((tmp_path / "chunked" / "blend.json").read_text())
    shards = [f for phase in blend["phases"].values() for f in phase["shards"]]
    files = sorted(p.relative_to(tmp_path / "chunked").as_posix() for p in (tmp_path / "chunked").rglob("*"))
    files = [f for f in files if (tmp_path / "chunked" / f).is_file()]
    assert len(shards) >= 12  # several buckets in each phase
    assert files == sorted([*shards, "blend.json", "manifest.json", "README.md", "report.md", "mixture.png"])
    assert chunked["prepared"][0] == 4 and chunked["staged"][0] <= 4  # a file per input file, whatever the chunks
    assert chunked["staged"][1] > 4 * 8  # routed in chunks of 10: a row group per (chunk, phase, bucket)
    assert work["staged"][0] == chunked["staged"][0] and work["staged"][1] < chunked["staged"][1]
    assert len(files) + sum(n for n, _ in chunked.values()) <= 2 * 4 + len(shards) + 5  # O(input + output files)
    for f in [*shards, "blend.json", "report.md"]:  # the same blend, routed in chunks or whole
        assert (tmp_path / "chunked" / f).read_bytes() == (tmp_path / "whole" / f).read_bytes(), f


# --- issue 18: cuts at an epoch's ends need no pass; picks handed to the shard writers in memory ------------------


def test_cuts_at_the_ends_of_an_epoch_need_no_pass(ray_local, tmp_path):
    """With every document holding a token (EOS appended), a cut before the first document (a cap at an integer
    max_epochs) or after the last (a phase taking a source whole) is known without a pass over the prepared files,
    and routes the same documents as the cut the search finds."""
    from pipelines.blending import search
    from pipelines.blending.plan import before, resolve_in_memory, stream_priority

    tokens = synthetic_sources()
    keys = {s: np.random.default_rng(1).integers(0, 2**64, len(t), dtype=np.uint64) for s, t in tokens.items()}
    (tmp_path / "prepared").mkdir()
    rows = {"blend_source": [s for s in tokens for _ in tokens[s]], "key": np.concatenate(list(keys.values()))}
    rows["num_tokens"] = np.concatenate(list(tokens.values())).astype(np.int64)
    pq.write_table(pa.table(rows), tmp_path / "prepared" / "0.parquet")
    queries = [{"source": "web", "epoch": 2, "r": 0, "rule": "floor"}]
    queries += [{"source": s, "epoch": 1, "r": int(t.sum()), "rule": "nearest"} for s, t in tokens.items()]
    docs, sums = {s: len(t) for s, t in tokens.items()}, {s: int(t.sum()) for s, t in tokens.items()}
    log = {"rounds": 0, "max_rows": 0}
    ours = search.resolve_on_workers(str(tmp_path / "prepared"), 7, docs, log, sums)(queries)
    theirs = resolve_in_memory(keys, tokens, 7)(queries)
    assert log["rounds"] == 0
    for q, a, b in zip(queries, ours, theirs, strict=True):
        priority = stream_priority(keys[q["source"]], 7, q["source"], q["epoch"])
        assert (a.epoch, a.count, a.tokens) == (b.epoch, b.count, b.tokens)
        assert np.array_equal(before(priority, keys[q["source"]], a), before(priority, keys[q["source"]], b))
    partial = [{"source": "math", "epoch": 0, "r": 1000, "rule": "nearest"}]  # inside the epoch: searched
    assert search.resolve_on_workers(str(tmp_path / "prepared"), 7, docs, log, sums)(partial) == (
        resolve_in_memory(keys, tokens, 7)(partial)
    )
    assert log["rounds"] == 1


def test_picks_from_memory_write_the_shards_the_staged_files_write(ray_local, tmp_path, monkeypatch):
    """Where the picks fit in Ray's object store, route hands them to the shard writers in memory instead of their
    reading the staged files back: the same blend, byte for byte (two phases, a second epoch, several buckets)."""
    (tmp_path / "web" / "documents").mkdir(parents=True)
    rows = [{"id": f"d-{i}", "text": "word " * (20 + i * 7 % 50), "source": "web"} for i in range(200)]
    for k in range(2):
        part = pa.Table.from_pylist(rows[k * 100 : (k + 1) * 100])
        pq.write_table(part, tmp_path / "web" / "documents" / f"{k}.parquet")
    config = {
        "input_paths": [str(tmp_path / "web")],
        "sources": [{"name": "web", "input": 0}],
        "phases": [{"name": p, "fraction": 0.5, "weights": {"web": 1}} for p in ("p1", "p2")],
        "total_tokens": 15_000,
        "docs_per_shard": 40,
    }
    (tmp_path / "mix.yaml").write_text(json.dumps(config))
    kept = []
    real = mix.route
    monkeypatch.setattr(mix, "route", lambda *a, **k: kept.append(k["keep"]) or real(*a, **k))
    argv = ["--config", str(tmp_path / "mix.yaml")]
    assert mix.main([*argv, "--output_dir", str(tmp_path / "memory")]) == 0
    monkeypatch.setattr(mix, "picks_fit", lambda *a: False)
    assert mix.main([*argv, "--output_dir", str(tmp_path / "staged")]) == 0
    assert kept == [True, False]
    files = sorted(p.relative_to(tmp_path / "memory") for p in (tmp_path / "memory").rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".parquet"]) > 4
    for f in files:
        if f.name not in ("manifest.json", "README.md"):
            assert (tmp_path / "memory" / f).read_bytes() == (tmp_path / "staged" / f).read_bytes(), f
