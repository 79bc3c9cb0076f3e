"""curate's fast paths give exactly what the code they replace gives: datatrove's spaCy words and sentence spans,
ftfy.fix_text, GopherRepetitionFilter's decisions (real web text from the shared data, and edge cases)."""

from __future__ import annotations

import gzip
import json
import random

import pytest
from datapaths import shared_data

pytest.importorskip(
    "datatrove", reason="the fast paths are datatrove's filters sped up (the GPU image has no datatrove)"
)
from pipelines.curation import fastpaths  # noqa: E402


@pytest.fixture(scope="module")
def pages() -> list[str]:
    from pipelines.curation.filters import normalize_text

    texts = []
    for name in ("CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz", "cc_en_head-0091.jsonl.gz"):
        with gzip.open(shared_data("dolma_tests", name), "rt") as f:
            texts += [json.loads(line)["text"] for line in f][:150]
    return [t for t in map(normalize_text, texts) if t]


EDGE_TEXTS = [
    "",
    " ",
    "  leading spaces. Then text",
    "Hello.  Two spaces. \tTab.\n\nNew paragraph!Next",
    "He said: ''For the record'' (a.m.) :) don't.\u00a0Non-breaking. End. ",
    "x' 'y ' ' \"quoted.\" \u201cCurly.\u201d Next... And? yes!",
    "trailing newline.\n",
]


def test_words_and_sentence_spans_equal_datatrove(pages):
    from datatrove.utils.word_tokenizers import SpaCyTokenizer

    reference = SpaCyTokenizer("en")
    fast = SpaCyTokenizer("en")
    fastpaths.share_word_tokens(fast)
    texts = pages + EDGE_TEXTS
    lines = [line.strip() for t in pages for line in t.splitlines()]
    for text in texts:
        assert fast.word_tokenize(text) == reference.word_tokenize(text), text[:200]
        fast.word_tokenize(text).append("changed by a caller")  # the same text again: from the last-text cache
        assert fast.word_tokenize(text) == reference.word_tokenize(text), text[:200]
        assert fast.span_tokenize(text) == reference.span_tokenize(text), text[:200]
    assert len(lines) > 2000
    for line in lines:
        assert fast.span_tokenize(line) == reference.span_tokenize(line), line[:200]


def test_fix_text_equals_ftfy(pages):
    import ftfy

    texts = pages + [
        "a &amp; b <p>x &lt; y</p>\n&amp; after the tag",
        "ctrl\x00chars\x1b[31mred\n\x7fdel",
        "caf\u00c3\u00a9 &eacute;\r\nline\x0cfeed",
        "<b>\n&amp;\n&amp;",
        "plain ascii\nonly",
    ]
    for text in texts:
        assert fastpaths.fix_text(text) == ftfy.fix_text(text, config=fastpaths._ftfy_config())


def test_gopher_repetition_helpers_equal_datatrove():
    from datatrove.data import Document
    from datatrove.pipeline.filters import gopher_repetition_filter as g

    rng = random.Random(0)
    vocab = ["a", "bc", "ab", "c", "abc", "the", "of", "x"]  # "a"+"bc" == "ab"+"c": equal "".join n-grams
    for _ in range(300):
        words = [rng.choice(vocab[: rng.randint(2, len(vocab))]) for _ in range(rng.randint(0, 60))]
        for n in range(2, 11):
            grams = g.get_n_grams(words, n)
            assert fastpaths._n_grams(words, n, " ") == grams
            if grams:
                assert fastpaths._top_duplicate(grams) == g.find_top_duplicate(grams)
            assert fastpaths._all_duplicate(words, n) == g.find_all_duplicate(words, n)
            assert fastpaths._GramHashes(words).all_duplicate(n) == g.find_all_duplicate(words, n)
    repeated = "one two three four five six seven eight nine ten eleven twelve. " * 2  # 5- to 10-grams repeat
    filtered = fastpaths.GopherRepetition(top_n_grams=(), dup_line_frac=None, dup_line_char_frac=None)
    reference = g.GopherRepetitionFilter(top_n_grams=(), dup_line_frac=None, dup_line_char_frac=None)
    for fraction in (0.1, 0.3, 0.45, 0.6):
        dup_n_grams = tuple((n, fraction) for n in range(5, 11))
        filtered.dup_n_grams = reference.dup_n_grams = dup_n_grams
        text = repeated + "a unique tail of other words " * 3
        assert filtered.filter(Document(text=text, id="x")) == reference.filter(Document(text=text, id="x"))


def test_gopher_repetition_decisions_equal_datatrove(pages):
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherRepetitionFilter

    reference, fast = GopherRepetitionFilter(), fastpaths.GopherRepetition()
    repeated = ["buy now " * 50, "one two three four five six seven eight nine ten. " * 8 + "end of the page here"]
    texts = pages + repeated
    ours = [fast.filter(Document(text=t, id="x")) for t in texts]
    theirs = [reference.filter(Document(text=t, id="x")) for t in texts]
    assert ours == theirs
    assert sum(d is True for d in theirs) > 20 and sum(d is not True for d in theirs) > 5


def test_gram_hashes_on_real_text(pages):
    """On real pages the hashed count of duplicated n-gram characters is datatrove's, for every n (no collision)."""
    from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate
    from datatrove.utils.text import split_into_words

    repeats = 0
    for text in pages:
        words = split_into_words(text, "eng")
        hashes = fastpaths._GramHashes(words)
        for n in range(5, 11):
            expected = find_all_duplicate(words, n)
            assert hashes.all_duplicate(n) == expected, (text[:100], n)
            repeats += expected > 0
    assert repeats > 50


def test_gopher_quality_decisions_equal_datatrove(pages):
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter

    reference, fast = GopherQualityFilter(), fastpaths.GopherQuality()
    odd = ["", "... ... ...", "# # # hash tags # #", "- a\n- b\n- c", "123 456 789 " * 30, "the and of " * 40]
    texts = pages + odd
    for _ in range(2):  # the second pass reads the word cache
        ours = [fast.filter(Document(text=t, id="x")) for t in texts]
        theirs = [reference.filter(Document(text=t, id="x")) for t in texts]
        assert ours == theirs
    assert sum(d is True for d in theirs) > 20 and len({d for d in theirs if d is not True}) > 3


def test_words_stay_right_when_the_chunk_cache_fills(pages, monkeypatch):
    """A full cache is cleared in the middle of a text: the text's chunks that were cached are tokenized again."""
    from datatrove.utils.word_tokenizers import SpaCyTokenizer

    monkeypatch.setattr(fastpaths._ChunkTokens, "MAX_SIZE", 300)
    reference, fast = SpaCyTokenizer("en"), SpaCyTokenizer("en")
    fastpaths.share_word_tokens(fast)
    for text in pages[:40]:
        assert fast.word_tokenize(text) == reference.word_tokenize(text), text[:200]
        assert fast.span_tokenize(text) == reference.span_tokenize(text), text[:200]
