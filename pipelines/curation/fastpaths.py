"""Exact fast paths under curate's filters: same outputs as datatrove's and ftfy's code, less work per document.

  share_word_tokens     datatrove's spaCy word and sentence splitting from a per-process cache of chunk tokens
  fix_text              ftfy.fix_text that skips lines ftfy cannot change (printable ASCII without "&")
  GopherRepetition      datatrove's GopherRepetitionFilter with its n-gram counts done by C-level builtins

tests/pipelines/curation/test_fastpaths.py compares each with the original on real web text.
"""

from __future__ import annotations

import functools
import re
from collections import Counter

from datatrove.pipeline.filters import GopherRepetitionFilter

# --- spaCy words and sentences --------------------------------------------------------------------------------


class _ChunkTokens(dict):
    """Whitespace-free chunk -> (its spaCy tokens, a flag per token for the sentencizer), computed once a process.

    spaCy cuts a text at whitespace and tokenizes each chunk on its own (`Tokenizer._tokenize_affixes`), so a
    text's tokens are its chunks' tokens in order, and a chunk's tokens concatenate back to the chunk. Flags:
    2 = in the sentencizer's punct_chars, 1 = is_punct only, 0 = neither (a token that can start a sentence)."""

    MAX_SIZE = 1 << 19  # ~100 MB of entries at most; cleared when full

    def __init__(self, nlp):
        super().__init__()
        self.nlp = nlp
        self.punct_chars = nlp.get_pipe("sentencizer").punct_chars

    def add(self, chunks: list[str]) -> None:
        """Tokenize the chunks not seen yet in one spaCy call; the caller holds spaCy's memory zone.

        The chunks are joined by "\\n", a token of its own that no multi-token special case (":)", "''") contains,
        so each chunk comes out as it would alone (joined by " ", a special case could match across two chunks and
        hide one that matches inside a chunk)."""
        missing = [c for c in dict.fromkeys(chunks) if c not in self]
        if not missing:
            return
        if len(self) + len(missing) > self.MAX_SIZE:
            self.clear()
        text = "\n".join(missing)
        self.nlp.max_length = max(self.nlp.max_length, len(text) + 10)
        words, flags, k = [], [], 0
        for t in self.nlp.make_doc(text):
            if t.text == "\n":  # the end of chunk k
                self[missing[k]] = (tuple(words), tuple(flags))
                words, flags, k = [], [], k + 1
            else:
                words.append(t.text)
                flags.append(2 if t.text in self.punct_chars else int(t.is_punct))
        self[missing[k]] = (tuple(words), tuple(flags))


_RUNS = re.compile(r"\S+|\s+")


def _sentence_spans(text: str, tokens: _ChunkTokens) -> list[tuple[int, int]]:
    """spaCy's Sentencizer spans over `text` (what datatrove's `span_tokenize` returns), from cached chunk tokens.

    A whitespace run is a token unless it is one " " after a word (spaCy's trailing space; a run starting with
    " " drops that space); it is never punctuation, so it starts a sentence after a period. The Sentencizer: a
    token that is neither punctuation nor in punct_chars, after a token in punct_chars, starts a sentence."""
    spans: list[tuple[int, int]] = []
    sent_start, end, seen_period, any_token = 0, 0, False, False
    for m in _RUNS.finditer(text):
        s, e = m.span()
        if text[s].isspace():
            if s and text[s] == " ":
                if e - s == 1:
                    continue
                s += 1
            if seen_period:
                spans.append((sent_start, end))
                sent_start, seen_period = s, False
            end, any_token = e, True
            continue
        words, flags = tokens[m.group()]
        any_token = True
        for word, flag in zip(words, flags, strict=True):
            if seen_period and not flag:
                spans.append((sent_start, end))
                sent_start, seen_period = s, False
            elif flag == 2:
                seen_period = True
            s += len(word)
            end = s
    if any_token:
        spans.append((sent_start, end))
    return spans


def share_word_tokens(tokenizer) -> None:
    """Make datatrove's spaCy `word_tokenize` and `span_tokenize` read a per-process cache of chunk tokens.

    datatrove runs spaCy's whole pipeline (tokenizer + sentencizer) on every text, for words three times per
    document and for sentences once per line in C4Quality. Here spaCy sees each distinct whitespace chunk once;
    words are the chunks' tokens in order (datatrove strips tokens and drops whitespace ones, which leaves exactly
    those), and sentence spans replay the Sentencizer's rule over them (`_sentence_spans`). Same tokens and spans,
    so same decisions (tests/pipelines/curation/test_blocks.py compares with datatrove alone on real web text)."""
    nlp = tokenizer.tokenizer
    tokens = _ChunkTokens(nlp)
    slow_words, slow_spans = tokenizer.word_tokenize, tokenizer.span_tokenize

    def word_tokenize(text: str) -> list[str]:
        if "IS_ALPHA" in text:  # the one string that breaks spaCy: datatrove's own fallback
            return slow_words(text)
        chunks = text.split()
        with nlp.memory_zone():
            tokens.add(chunks)
        return [word for chunk in chunks for word in tokens[chunk][0]]

    def span_tokenize(text: str) -> list[tuple[int, int]]:
        if "IS_ALPHA" in text:
            return slow_spans(text)
        with nlp.memory_zone():
            tokens.add(text.split())
        return _sentence_spans(text, tokens)

    tokenizer.word_tokenize = word_tokenize
    tokenizer.span_tokenize = span_tokenize


# --- ftfy ----------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _ftfy_config():
    from ftfy import TextFixerConfig

    # datatrove's FTFYFormatter defaults: repair encodings and control characters, enforce no Unicode normal form
    return TextFixerConfig(
        unescape_html="auto",
        fix_latin_ligatures=False,
        fix_character_width=False,
        uncurl_quotes=False,
        fix_line_breaks=False,
        normalization=None,
    )


# What ftfy might change under `_ftfy_config`: anything but printable ASCII and \t \n \f \r, or "&" (HTML entities)
_FTFY_WORK = re.compile(r"[^\t\n\x0c\r\x20-\x25\x27-\x7e]")


def fix_text(text: str) -> str:
    """`ftfy.fix_text(text, config=_ftfy_config())`, same output: the same segments (lines), the same "<" rule for
    HTML, but a segment with nothing ftfy could change (printable ASCII without "&") skips ftfy's fixers."""
    from ftfy import fix_and_explain

    config = _ftfy_config()
    out, pos = [], 0
    while pos < len(text):
        end = text.find("\n", pos) + 1 or len(text)
        end = min(end, pos + config.max_decode_length)
        segment = text[pos:end]
        if config.unescape_html == "auto" and "<" in segment:
            config = config._replace(unescape_html=False)
        out.append(fix_and_explain(segment, config)[0] if _FTFY_WORK.search(segment) else segment)
        pos = end
    return "".join(out)


# --- GopherRepetition ------------------------------------------------------------------------------------------


def _n_grams(words: list[str], n: int, sep: str) -> list[str]:
    """datatrove's `get_n_grams` (sep " ") and the n-grams of `find_all_duplicate` (sep ""), built in C."""
    return list(map(sep.join, zip(*(words[k:] for k in range(n)), strict=False)))


def _top_duplicate(n_grams: list[str]) -> int:
    """datatrove's `find_top_duplicate`: chars of the most common n-gram times its count (first one on a tie)."""
    top, count = Counter(n_grams).most_common(1)[0]
    return len(top) * count


def _all_duplicate(words: list[str], n: int, grams: list[str] | None = None) -> int:
    """datatrove's `find_all_duplicate`: chars of n-grams seen before, skipping n words after each; 0 when every
    n-gram is new (one set, no loop), else the same loop over n-grams built beforehand (`grams`: the "".join
    n-grams when the caller has them)."""
    grams = _n_grams(words, n, "") if grams is None else grams
    if len(set(grams)) == len(grams):
        return 0
    unique: set[str] = set()
    repeated_chars, idx = 0, 0
    while idx < len(grams):
        gram = grams[idx]
        if gram in unique:
            repeated_chars += len(gram)
            idx += n
        else:
            unique.add(gram)
            idx += 1
    assert repeated_chars <= len("".join(words))
    return repeated_chars


class GopherRepetition(GopherRepetitionFilter):
    """GopherRepetitionFilter, same decisions; only the n-gram helpers differ (see above)."""

    def filter(self, doc) -> bool | tuple[bool, str]:
        from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates
        from datatrove.utils.text import split_into_words

        text = doc.text
        if not text:
            return False, "empty"

        paragraphs = self.paragraph_exp.split(text.strip())
        paragraphs_duplicates, char_duplicates = find_duplicates(paragraphs)
        if self.dup_para_frac and paragraphs_duplicates / len(paragraphs) > self.dup_para_frac:
            return False, "dup_para_frac"
        if self.dup_para_char_frac and char_duplicates / len(text) > self.dup_para_char_frac:
            return False, "dup_para_char_frac"

        lines = self._line_splitter.split(text)
        line_duplicates, char_duplicates = find_duplicates(lines)
        if self.dup_line_frac and line_duplicates / len(lines) > self.dup_line_frac:
            return False, "dup_line_frac"
        if self.dup_line_char_frac and char_duplicates / len(text) > self.dup_line_char_frac:
            return False, "dup_line_char_frac"

        words = split_into_words(text, self.language)

        for n, n_frac in self.top_n_grams:
            n_grams = _n_grams(words, n, " ")
            if not n_grams:
                continue
            if _top_duplicate(n_grams) / len(text) > n_frac:
                return False, f"top_{n}_gram"

        grams, size = None, 0
        for n, n_frac in self.dup_n_grams:
            # the (n+1)-grams are the n-grams with the next word appended: one concatenation each, not n + 1
            grams = list(map(str.__add__, grams, words[size:])) if grams is not None and n == size + 1 else None
            grams, size = grams if grams is not None else _n_grams(words, n, ""), n
            if _all_duplicate(words, n, grams) / len(text) > n_frac:
                return False, f"duplicated_{n}_n_grams"

        return True
