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
    for text in lines + texts:  # C4Quality's count: exact below the limit, at least the limit otherwise
        expected = max(1, len(reference.span_tokenize(text)))  # datatrove's split_into_sentences: >= 1 part
        for at_most in (1, 2, 5):
            assert min(fast.count_sentences(text, at_most), at_most) == min(expected, at_most), (text[:200], at_most)


def test_fix_text_equals_ftfy(pages):
    import ftfy

    raw = []
    for name in ("CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz", "cc_en_head-0174.jsonl.gz"):
        with gzip.open(shared_data("dolma_tests", name), "rt") as f:
            raw += [json.loads(line)["text"] for line in f][:400]  # before normalize: mojibake and entities left
    texts = (
        pages
        + raw
        + [
            "a &amp; b <p>x &lt; y</p>\n&amp; after the tag",
            "ctrl\x00chars\x1b[31mred\n\x7fdel",
            "caf\u00c3\u00a9 &eacute;\r\nline\x0cfeed",
            "<b>\n&amp;\n&amp;",
            "plain ascii\nonly",
            "it\u2019s \u2014 caf\u00e9 \u00e2\u20ac\u2122s \u00c3 \nsmart \u201cquotes\u201d\u2026\u0080c1\ufeffbom",
        ]
    )
    changed = 0
    for text in texts:
        expected = ftfy.fix_text(text, config=fastpaths._ftfy_config())
        assert fastpaths.fix_text(text) == expected, text[:200]
        changed += expected != text
    assert changed > 5


def test_ftfy_leaves_text_without_its_characters_alone():
    """The characters `_ftfy_work` looks for are read off ftfy's own patterns: text made of any others (random
    mixes of ASCII and non-ASCII letters, punctuation and symbols) comes out of ftfy unchanged."""
    import ftfy

    work = fastpaths._ftfy_work()
    assert work.search("\u00c3\u00a9") and work.search("&amp;") and work.search("\x80") and not work.search("\u2019")
    pool = [chr(c) for c in [*range(0x20, 0x7F), *range(0xA0, 0x3000)] if not work.search(chr(c))]
    assert len(pool) > 10_000
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(1, 12)))
        assert ftfy.fix_text(text, config=fastpaths._ftfy_config()) == text, ascii(text)


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


def test_c4_quality_decisions_and_text_equal_datatrove(pages):
    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    from pipelines.curation.filters import warm_tokenizer

    warm_tokenizer([])  # as curate's workers do: C4Quality counts sentences with the cached chunk tokens
    assert hasattr(load_word_tokenizer("eng"), "count_sentences")

    odd = [
        "One. Two. Three. Four.",  # four sentences: too few
        "One. Two. Three. Four. Five.",
        "Only three words.\nA line with lorem ipsum dolor.\n" + "Enough words here. " * 6,
        "Enough words here, a sentence. " * 6 + "\nthen a {curly} bracket late in the page.",
        "Use of cookies here, it says.\nJavaScript is off, it says.\n" + "A b c. " * 3,
    ]
    for kwargs in ({}, {"filter_no_terminal_punct": False}, {"min_num_sentences": -1}, {"split_paragraph": False}):
        reference, fast = C4QualityFilter(**kwargs), fastpaths.C4Quality(**kwargs)
        results = []
        for text in pages + odd:
            theirs, ours = Document(text=text, id="x"), Document(text=text, id="x")
            results.append(reference.filter(theirs))
            assert fast.filter(ours) == results[-1], text[:200]
            assert ours.text == theirs.text, text[:200]
        assert sum(r is True for r in results) > 20 and len({r for r in results if r is not True}) > 1, kwargs


def test_pii_hints_skip_only_texts_without_a_match(pages):
    """redact_pii scans a pattern only when the text has its hint: same text and counts as scanning every text."""
    from pipelines.curation import pii

    def every_pattern(text: str) -> tuple[str, dict[str, int]]:
        counts = {"email": 0, "ip_address": 0, "phone_number": 0}
        for kind, pattern in (("email", pii.EMAIL), ("ip_address", pii.IPV4), ("phone_number", pii.PHONE)):
            for m in reversed(list(pattern.finditer(text))):
                if kind != "ip_address" or pii._public_ip(m):
                    counts[kind] += 1
                    text = text[: m.start()] + pii.PII_PLACEHOLDERS[kind] + text[m.end() :]
        return text, counts

    planted = [
        "Mail ann.lee@example.org, call (555) 010-0199 or +44 20 7946 0958, from 93.184.216.34 or 10.0.0.1.",
        "+1 212 555 0199 and 1.2.3.4 and 1.2.3 and a@b.co and 555-0199 and +1-800-555-0199",
    ]
    found = 0
    for text in pages + planted:
        assert pii.redact_pii(text) == every_pattern(text), text[:200]
        found += sum(every_pattern(text)[1].values())
    assert found > 10
