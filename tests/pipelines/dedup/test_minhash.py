"""MinHash signatures: bit-identical to datatrove's MinhashDedupSignature on real multilingual text, presets, LSH."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest
import xxhash
from datapaths import shared_data

from pipelines.dedup.minhash import (
    PRESETS,
    MinhashParams,
    band_keys,
    parse_spec,
    shingles,
    signatures,
    simplify,
    xxh32_spans,
    xxh64_spans,
)


def _real_texts() -> list[str]:
    """English web pages (boilerplate and all), plus sentences in 8 scripts (accents, Arabic, CJK, Cyrillic...)."""
    cc = shared_data("dolma_tests", "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz")
    texts = [json.loads(line)["text"] for line in gzip.open(cc, "rt")][:60]
    for lang in ("de", "fr", "ru", "ar", "el", "hi", "ja", "ko"):
        lines = shared_data("lingua_language_testdata", "sentences", f"{lang}.txt").read_text().splitlines()
        texts += ["\n".join(lines[i : i + 8]) for i in range(0, 40, 8)]
    return texts + ["", "too short", "Compute $\\dbinom{31}{28}$ 3.14 don't cannot gonna 5km"]


def test_vectorized_xxhash_equals_xxhash():
    rng = np.random.default_rng(0)
    buf = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    starts = rng.integers(0, 4800, 2000)
    lengths = rng.integers(0, 200, 2000)  # every tail length, 0 to 12 stripes
    spans = [buf[s : s + n] for s, n in zip(starts, lengths, strict=True)]
    assert xxh64_spans(buf, starts, lengths).tolist() == [xxhash.xxh64_intdigest(b) for b in spans]
    assert xxh32_spans(buf, starts, lengths).tolist() == [xxhash.xxh32_intdigest(b) for b in spans]


def test_simplify_equals_datatrove():
    from datatrove.utils.text import simplify_text

    texts = _real_texts()
    assert [simplify(t) for t in texts] == [simplify_text(t) for t in texts]


@pytest.mark.parametrize(
    "spec",
    ["fineweb", "fineweb,bands=9,rows=13,seed=7,ngram=3", "fineweb,precision=32"],
)
def test_signatures_bit_identical_to_datatrove(spec, tmp_path):
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.utils.hashing import HashConfig

    params = parse_spec(spec)
    config = MinhashConfig(
        n_grams=params.ngram,
        num_buckets=params.bands,
        hashes_per_bucket=params.rows,
        seed=params.seed,
        hash_config=HashConfig(precision=params.precision),
    )
    theirs = MinhashDedupSignature(output_folder=str(tmp_path), config=config)
    texts = _real_texts() if spec == "fineweb" else _real_texts()[::3]  # datatrove takes ~20 ms per page
    ours, valid = signatures(texts, params)
    for text, sig, ok in zip(texts, ours, valid, strict=True):
        shingled = theirs.get_shingles(text)
        assert ok == (shingled.size > 0)
        if ok:
            assert np.array(theirs.get_signature(shingled)).reshape(-1).tolist() == sig.tolist()
    assert ours.dtype == (np.uint32 if params.precision == 32 else np.uint64)
    if spec == "fineweb":
        assert valid.sum() > 90 and not valid[-3:-1].any()  # the empty and 2-word texts have no 5-gram


def test_presets_and_free_parameters():
    fineweb, nemotron = parse_spec("fineweb"), parse_spec("nemotron_cc")
    assert (fineweb.unit, fineweb.ngram, fineweb.bands, fineweb.rows, fineweb.precision) == ("word", 5, 14, 8, 64)
    assert (nemotron.unit, nemotron.ngram, nemotron.bands, nemotron.rows) == ("char", 24, 20, 13)
    assert parse_spec("none") is None
    assert parse_spec("nemotron_cc,bands=10,simplify=true") == MinhashParams(
        unit="char", ngram=24, bands=10, rows=13, simplify=True
    )
    for bad in ("minhash", "fineweb,bands", "fineweb,colour=red", "fineweb,precision=16"):
        with pytest.raises(ValueError):
            parse_spec(bad)


def test_char_preset_sees_character_edits():
    """nemotron_cc: 24-character windows of the raw text; a doc under 24 characters has no signature."""
    params = PRESETS["nemotron_cc"]
    text = _real_texts()[3]
    edited = text.replace("e", "E", 3)
    sigs, valid = signatures([text, text, edited, "short text"], params)
    assert sigs.shape == (4, 260) and valid.tolist() == [True, True, True, False]
    assert (sigs[0] == sigs[1]).all() and (sigs[0] != sigs[2]).any()
    h, offsets = shingles([text], params)
    assert offsets[-1] == len(text) - 23 and h.dtype == np.uint64


def _edit(words: list[str], fraction: float, rng: random.Random) -> list[str]:
    """Replace a fraction of the words: the kind of change that moves a page down the S-curve."""
    words = list(words)
    for i in rng.sample(range(len(words)), int(fraction * len(words))):
        words[i] = rng.choice(["lorem", "ipsum", "dolor", "amet", "sed", "quis"]) + str(rng.randrange(99))
    return words


def test_lsh_collisions_follow_the_s_curve():
    """P(two docs share a band) vs exact 5-gram Jaccard matches 1-(1-s^r)^b on real pages with random edits."""
    cc = shared_data("dolma_tests", "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz")
    pages = [t for t in (json.loads(line)["text"] for line in gzip.open(cc, "rt")) if len(t.split()) > 300][:60]
    params, rng = PRESETS["fineweb"], random.Random(0)
    pairs = []
    for page in pages:
        for fraction in (0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1):
            pairs.append((page, " ".join(_edit(page.split(), fraction, rng))))
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    ha, oa = shingles(a, params)
    hb, ob = shingles(b, params)
    jaccard = np.array(
        [
            len(np.intersect1d(ha[oa[i] : oa[i + 1]], hb[ob[i] : ob[i + 1]]))
            / len(np.union1d(ha[oa[i] : oa[i + 1]], hb[ob[i] : ob[i + 1]]))
            for i in range(len(pairs))
        ]
    )
    ka, kb = band_keys(signatures(a, params)[0], params), band_keys(signatures(b, params)[0], params)
    hit = (ka == kb).any(axis=1)
    for lo, hi in ((0.5, 0.65), (0.65, 0.75), (0.75, 0.85), (0.85, 1.0)):
        sel = (jaccard >= lo) & (jaccard < hi)
        if sel.sum() >= 25:
            expected = params.inclusion_probability(jaccard[sel]).mean()
            assert abs(hit[sel].mean() - expected) < 0.15, (lo, hi, hit[sel].mean(), expected)
    assert hit[jaccard >= 0.85].mean() > 0.95
