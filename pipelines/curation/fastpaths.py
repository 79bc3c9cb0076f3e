"""Exact fast paths under curate's filters: same outputs as datatrove's and ftfy's code, less work per document.

  share_word_tokens     datatrove's spaCy word and sentence splitting from a per-process cache of chunk tokens
  fix_text              ftfy.fix_text that skips lines ftfy cannot change (none of the characters its fixers need)
  GopherRepetition      datatrove's GopherRepetitionFilter: top n-grams counted by C-level builtins, duplicated
                        n-grams found by numpy hashes of the characters (strings built only for repeated ones)
  GopherQuality         datatrove's GopherQualityFilter with its per-word character tests cached per word
  C4Quality             datatrove's C4QualityFilter, counting sentences only until the page has enough

tests/pipelines/curation/test_fastpaths.py compares each with the original on real web text.
Length (~550 lines): the five paths share the per-process caches (chunk tokens, a text's word split) that make
them fast; split, each module would keep its own copy of the same text's words.
"""

from __future__ import annotations

import functools
import re
from collections import Counter

import numpy as np
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter

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
        """Tokenize the chunks not seen yet in one spaCy call, inside spaCy's memory zone (as datatrove does).

        The chunks are joined by "\\n", a token of its own that no multi-token special case (":)", "''") contains,
        so each chunk comes out as it would alone (joined by " ", a special case could match across two chunks and
        hide one that matches inside a chunk); their order does not matter."""
        missing = [c for c in set(chunks) if c not in self]  # (set.difference(self) would iterate the whole cache)
        if not missing:
            return
        if len(self) + len(missing) > self.MAX_SIZE:
            self.clear()
            missing = list(set(chunks))  # the text's cached chunks went too
        with self.nlp.memory_zone():
            self._tokenize(missing)

    def _tokenize(self, missing: list[str]) -> None:
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


def _sentence_count(text: str, tokens: _ChunkTokens, at_most: int) -> int:
    """`len(_sentence_spans(text, tokens))` when it is below `at_most`; else a number from `at_most` up to it (the
    count stops there). The same walk, without building spans."""
    count, seen_period, any_token = 0, False, False  # count: sentences closed so far; one more is open after a break
    for m in _RUNS.finditer(text):
        s, e = m.span()
        if text[s].isspace():
            if s and text[s] == " " and e - s == 1:
                continue
            if seen_period:
                count, seen_period = count + 1, False
                if count + 1 >= at_most:
                    return count + 1
            any_token = True
            continue
        any_token = True
        for flag in tokens[m.group()][1]:
            if seen_period and not flag:
                count, seen_period = count + 1, False
                if count + 1 >= at_most:
                    return count + 1
            elif flag == 2:
                seen_period = True
    return count + any_token


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

    last: list = [None, []]  # the last text and its words: three filters in a row split the same document's text

    def word_tokenize(text: str) -> list[str]:
        if text is last[0]:
            return list(last[1])
        if "IS_ALPHA" in text:  # the one string that breaks spaCy: datatrove's own fallback
            return slow_words(text)
        chunks = text.split()
        tokens.add(chunks)
        last[:] = text, [word for chunk in chunks for word in tokens[chunk][0]]
        return list(last[1])

    def span_tokenize(text: str) -> list[tuple[int, int]]:
        if "IS_ALPHA" in text:
            return slow_spans(text)
        tokens.add(text.split())
        return _sentence_spans(text, tokens)

    def count_sentences(text: str, at_most: int) -> int:
        """`len(split_into_sentences(text))` (at least 1) when it is below `at_most`, else at least `at_most`."""
        if "IS_ALPHA" in text:
            return max(1, len(slow_spans(text)))
        tokens.add(text.split())
        return max(1, _sentence_count(text, tokens, at_most))

    tokenizer.word_tokenize = word_tokenize
    tokenizer.span_tokenize = span_tokenize
    tokenizer.count_sentences = count_sentences  # for C4Quality


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


def _required_chars(pattern: re.Pattern) -> set[str] | None:
    """Characters one of which every match of `pattern` contains, or None when that cannot be read off it.

    `pattern` must be one alternation (ftfy's BADNESS_RE is 37 alternatives); from each alternative, one item
    that every match of it contains (a literal, a class of literals and ranges, or a repeat of one at least once),
    the one with the fewest ASCII characters, then the smallest."""
    import re._constants as c
    import re._parser

    def accepted(op, av) -> set[str] | None:
        if op is c.LITERAL:
            return {chr(av)}
        if op is c.IN and all(o in (c.LITERAL, c.RANGE) for o, _ in av):
            return {ch for o, a in av for ch in ([chr(a)] if o is c.LITERAL else map(chr, range(a[0], a[1] + 1)))}
        return None

    tree = re._parser.parse(pattern.pattern, pattern.flags)
    if len(tree.data) != 1 or tree.data[0][0] is not c.BRANCH:
        return None
    chars: set[str] = set()
    for alternative in tree.data[0][1][1]:
        options = []
        for op, av in alternative.data:
            if op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[0] >= 1 and len(av[2].data) == 1:
                op, av = av[2].data[0]
            if (found := accepted(op, av)) is not None:
                options.append(found)
        if not options:
            return None
        chars |= min(options, key=lambda s: (sum(ch < "\x80" for ch in s), len(s)))
    return chars


@functools.lru_cache(maxsize=1)
def _ftfy_work() -> re.Pattern:
    """A character without which ftfy (under `_ftfy_config`) returns a segment unchanged.

    Each fixer ftfy runs there needs one: unescape_html "&" (its entities start with it), fix_encoding a match of
    BADNESS_RE (it returns ASCII or not-bad text as it is; `_required_chars` reads what every match contains:
    mojibake characters such as "Ã" or "€", ~300 of them, none ASCII), fix_c1_controls U+0080-U+009F,
    fix_surrogates a surrogate, remove_terminal_escapes ESC, remove_control_chars its table. A segment without
    any is its own output: ftfy's loop stops after the first round changed nothing. Half of the segments with
    non-ASCII text in web pages (curly apostrophes, dashes, most accented letters) need no ftfy call."""
    from ftfy import chardata
    from ftfy.badness import BADNESS_RE

    mojibake = _required_chars(BADNESS_RE)
    if mojibake is None:  # another ftfy's pattern: anything but printable ASCII goes through ftfy
        return re.compile(r"[^\t\n\x0c\r\x20-\x25\x27-\x7e]")
    chars = mojibake | {chr(c) for c in range(0x80, 0xA0)} | {chr(c) for c in chardata.CONTROL_CHARS} | {"&", "\x1b"}
    return re.compile("[" + "".join(map(re.escape, sorted(chars))) + "\ud800-\udfff]")


def fix_text(text: str) -> str:
    """`ftfy.fix_text(text, config=_ftfy_config())`, same output: the same segments (lines), the same "<" rule for
    HTML, but a segment with nothing ftfy could change (no character of `_ftfy_work`) skips ftfy's fixers."""
    from ftfy import fix_and_explain

    config, work = _ftfy_config(), _ftfy_work()
    out, pos = [], 0
    while pos < len(text):
        end = text.find("\n", pos) + 1 or len(text)
        end = min(end, pos + config.max_decode_length)
        segment = text[pos:end]
        if config.unescape_html == "auto" and "<" in segment:
            config = config._replace(unescape_html=False)
        out.append(fix_and_explain(segment, config)[0] if work.search(segment) else segment)
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


_MODULI = (2_147_483_647, 2_147_483_629)  # two primes below 2**31: a product of two residues fits in uint64
_BASE = 1_000_003


@functools.lru_cache(maxsize=8)
def _powers(size: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(B**k mod p, B**-k mod p) for k < size, per modulus p (size: a power of two, so few sizes are ever built)."""
    out = []
    for p in _MODULI:
        pw, inv = np.ones(size, np.uint64), np.ones(size, np.uint64)
        b, b_inv = _BASE % p, pow(_BASE, p - 2, p)
        m = 1
        while m < size:  # doubling: pw[m:2m] = pw[:m] * B**m
            pw[m : 2 * m] = pw[: min(m, size - m)] * np.uint64(pow(b, m, p)) % np.uint64(p)
            inv[m : 2 * m] = inv[: min(m, size - m)] * np.uint64(pow(b_inv, m, p)) % np.uint64(p)
            m *= 2
        out.append((pw, inv))
    return tuple(out)


class _GramHashes:
    """Polynomial hashes (two moduli, 62 bits together) of every "".join n-gram of `words`, from one prefix sum
    over the characters. A substring's hash depends only on its characters, so equal n-gram strings have equal
    hashes; unequal ones could collide, which `all_duplicate` checks with the strings before it trusts a hash."""

    def __init__(self, words: list[str]):
        self.words = words
        text = "".join(words)
        codes = np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.uint64)
        self.ends = np.zeros(len(words) + 1, np.int64)  # word k is text[ends[k]:ends[k + 1]]
        np.cumsum(np.fromiter(map(len, words), np.int64, len(words)), out=self.ends[1:])
        size = 1 << max(10, (len(codes) + 1).bit_length())
        self.prefix, self.powers = [], []
        for p, (pw, inv) in zip(_MODULI, _powers(size), strict=True):
            # prefix[i] = sum_{j < i} c_j * B**-j mod p, so hash(text[a:b]) = B**(b-1) * (prefix[b] - prefix[a])
            prefix = np.zeros(len(codes) + 1, np.uint64)
            np.cumsum(codes * inv[: len(codes)] % np.uint64(p), out=prefix[1:])  # < 2**31 * 2**32: no overflow
            self.prefix.append(prefix % np.uint64(p))
            self.powers.append(pw)

    def all_duplicate(self, n: int) -> int | None:
        """`_all_duplicate(words, n)`, or None when two different n-grams share a hash (the caller counts with
        strings). Only n-grams that occur more than once can be "seen before", so the loop visits just those:
        a hit at i adds its characters and makes the next visited position i + n, as datatrove's loop does."""
        count = len(self.ends) - n  # n-grams: len(words) - n + 1
        if count < 2:
            return 0
        starts, ends = self.ends[:count], self.ends[n:]
        key = np.zeros(count, np.uint64)
        for p, prefix, pw in zip(_MODULI, self.prefix, self.powers, strict=True):
            p = np.uint64(p)
            diff = (prefix[ends] + p - prefix[starts]) % p
            key = (key << np.uint64(31)) | (diff * pw[np.maximum(ends - 1, 0)] % p)
        _, group, counts = np.unique(key, return_inverse=True, return_counts=True)
        repeated = np.flatnonzero(counts[group] > 1)
        if not len(repeated):
            return 0
        words, strings = self.words, {}
        for i, g in zip(repeated.tolist(), group[repeated].tolist(), strict=True):
            if strings.setdefault(g, "".join(words[i : i + n])) != "".join(words[i : i + n]):
                return None  # a hash collision: not the same string
        lengths = (ends - starts)[repeated].tolist()
        seen: set[int] = set()
        repeated_chars, next_visit = 0, 0
        for i, g, length in zip(repeated.tolist(), group[repeated].tolist(), lengths, strict=True):
            if i < next_visit:
                continue
            if g in seen:
                repeated_chars += length
                next_visit = i + n
            else:
                seen.add(g)
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

        hashes = _GramHashes(words) if self.dup_n_grams else None
        for n, n_frac in self.dup_n_grams:
            duplicated = hashes.all_duplicate(n)
            duplicated = _all_duplicate(words, n) if duplicated is None else duplicated
            if duplicated / len(text) > n_frac:
                return False, f"duplicated_{n}_n_grams"

        return True


# --- GopherQuality ---------------------------------------------------------------------------------------------


class GopherQuality(GopherQualityFilter):
    """GopherQualityFilter, same decisions; its two per-word character tests (has a non-punctuation character,
    has a letter) are looked up in a per-process dict of word -> flags instead of run on every occurrence."""

    MAX_WORDS = 1 << 20  # cleared when full

    def _word_flags(self, words: list[str]) -> list[tuple[bool, bool]]:
        from datatrove.utils.text import PUNCTUATION_SET

        flags: dict[str, tuple[bool, bool]] = self.__dict__.setdefault("_flags", {})  # no __init__: same signature
        new = [w for w in set(words) if w not in flags]
        if len(flags) + len(new) > self.MAX_WORDS:
            flags.clear()
            new = list(set(words))
        for w in new:
            flags[w] = (any(ch not in PUNCTUATION_SET for ch in w), any(c.isalpha() for c in w))
        return [flags[w] for w in words]

    def filter(self, doc) -> bool | tuple[bool, str]:
        from datatrove.utils.text import split_into_words

        text = doc.text
        words = split_into_words(text, self.language)
        n_words = len(words)
        flags = self._word_flags(words)

        non_symbol_words = [w for w, (non_symbol, _) in zip(words, flags, strict=True) if non_symbol]
        n_non_symbol_words_words = len(non_symbol_words)

        if self.min_doc_words and n_non_symbol_words_words < self.min_doc_words:
            return False, "gopher_short_doc"
        if self.max_doc_words and n_non_symbol_words_words > self.max_doc_words:
            return False, "gopher_long_doc"

        avg_n_words = np.mean([len(w) for w in non_symbol_words])
        if self.min_avg_word_length and avg_n_words < self.min_avg_word_length:
            return False, "gopher_below_avg_threshold"
        if self.max_avg_word_length and avg_n_words > self.max_avg_word_length:
            return False, "gopher_above_avg_threshold"

        if self.max_symbol_word_ratio and text.count("#") / n_words > self.max_symbol_word_ratio:
            return False, "gopher_too_many_hashes"
        if self.max_symbol_word_ratio and (text.count("...") + text.count("…")) / n_words > self.max_symbol_word_ratio:
            return False, "gopher_too_many_ellipsis"

        lines = text.splitlines()
        if (
            self.max_bullet_lines_ratio
            and sum(s.lstrip().startswith("•") or s.lstrip().startswith("-") for s in lines) / len(lines)
            > self.max_bullet_lines_ratio
        ):
            return False, "gopher_too_many_bullets"
        if (
            self.max_ellipsis_lines_ratio
            and sum(s.rstrip().endswith("...") or s.rstrip().endswith("…") for s in lines) / len(lines)
            > self.max_ellipsis_lines_ratio
        ):
            return False, "gopher_too_many_end_ellipsis"

        if (
            self.max_non_alpha_words_ratio
            and sum(has_alpha for _, has_alpha in flags) / n_words < self.max_non_alpha_words_ratio
        ):
            return False, "gopher_below_alpha_threshold"

        if self.min_stop_words and len(self.stop_words.intersection(set(words))) < self.min_stop_words:
            return False, "gopher_enough_stop_words"

        return True


# --- C4Quality -------------------------------------------------------------------------------------------------


class C4Quality(C4QualityFilter):
    """C4QualityFilter, same decisions and the same rewritten text; it stops counting sentences once the page has
    `min_num_sentences` (the count only ever grows, and only `count < min_num_sentences` is used), so spaCy's
    sentence rule runs on a page's first few kept lines instead of all of them, and on a long line only until
    it has the sentences still missing (`count_sentences` of `share_word_tokens`, when installed)."""

    def filter(self, doc) -> bool | tuple[bool, str]:
        from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, ELLIPSIS, END_PUNCTUATION, POLICY_SUBSTRINGS
        from datatrove.utils.text import split_into_sentences
        from datatrove.utils.word_tokenizers import load_word_tokenizer

        tokenizer = load_word_tokenizer(self.language)
        count = getattr(tokenizer, "count_sentences", None)  # from share_word_tokens
        if count is None:
            count = lambda line, _: len(split_into_sentences(line, self.language))  # noqa: E731
        lines = doc.text.splitlines() if self.split_paragraph else split_into_sentences(doc.text, self.language)

        num_sentences = 0
        kept_lines = []

        for line in lines:
            line = line.strip()
            words = line.split()
            self.stat_update("line-total")
            if self.max_word_length != -1 and any(len(word) > self.max_word_length for word in words):
                self.stat_update("line-filter-too_long_word")
                continue
            if self.remove_citations:
                line = CITATION_REGEX.sub("", line)
            if self.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
                self.stat_update("line-filter-no_terminal_punc")
                continue
            if len(words) < self.min_words_per_line:
                self.stat_update("line-filter-too_few_words")
                continue
            line_l = line.lower()
            if self.filter_lorem_ipsum and "lorem ipsum" in line_l:
                return False, "lorem_ipsum"
            if self.filter_javascript and "javascript" in line_l:
                self.stat_update("line-filter-javascript")
                continue
            if self.filter_curly_bracket and "{" in line:
                return False, "curly_bracket"
            if self.filter_policy and any(p in line_l for p in POLICY_SUBSTRINGS):
                self.stat_update("line-filter-policy")
                continue
            if self.min_num_sentences != -1 and num_sentences < self.min_num_sentences:  # the one change
                num_sentences += count(line, self.min_num_sentences - num_sentences) if self.split_paragraph else 1
            kept_lines.append(line)
            self.stat_update("line-kept")
        if num_sentences < self.min_num_sentences:
            return False, "too_few_sentences"

        doc.text = ("\n" if self.split_paragraph else " ").join(kept_lines).strip()
        return True
