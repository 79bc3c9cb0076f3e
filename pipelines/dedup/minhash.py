"""MinHash signatures for fuzzy dedup, computed on whole Arrow batches with numpy.

Two presets and free parameters (`parse_spec`):

    fineweb      word 5-grams of datatrove-simplified text, 14 bands x 8 rows, 64-bit (FineWeb's recipe)
    nemotron_cc  character 24-grams of the raw text, 20 bands x 13 rows (Nemotron-CC / NeMo Curator's recipe)
    "fineweb,bands=20,rows=10"   a preset with fields overridden

Configured the same, signatures are bit-identical to datatrove 0.10.1's `MinhashDedupSignature`: the same text
simplification (`datatrove.utils.text.simplify_text`), the same spaCy word tokens, xxh64 of each " "-joined n-gram,
and the same permutations `((h * a + b) mod 2**64) mod (2**61 - 1)` with `(a, b)` drawn from
`np.random.RandomState(seed)`. What differs is the speed: datatrove runs a spaCy pipeline per document, hashes
each n-gram in a Python call and reduces one document at a time; here a batch is normalized with C-level string
operations, tokenized through a per-process cache of spaCy's answer for each distinct whitespace chunk (spaCy
tokenizes chunks independently), hashed by a vectorized xxh64 over byte spans of one buffer, and reduced for all
documents of the batch at once.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass
from functools import cache

import numpy as np

MERSENNE = np.uint64((1 << 61) - 1)
MAX64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_CHUNK = 2048  # shingles per permutation block: 2048 x 112 x 8 B ~ 1.8 MB, stays in L2


@dataclass(frozen=True)
class MinhashParams:
    """What a signature is made of; `bands * rows` permutations, LSH threshold ~ (1/bands) ** (1/rows)."""

    unit: str = "word"  # "word": n-grams of spaCy word tokens; "char": n-grams of characters
    ngram: int = 5
    bands: int = 14
    rows: int = 8
    seed: int = 1
    precision: int = 64  # 64 or 32 bit hashes (datatrove's HashConfig.precision)
    simplify: bool = True  # datatrove's simplify_text first (lowercase, numbers -> 0, no punctuation, no accents)

    @property
    def num_hashes(self) -> int:
        return self.bands * self.rows

    def threshold(self) -> float:
        """Jaccard at which the LSH inclusion probability 1-(1-s^r)^b crosses ~1/2 (the usual approximation)."""
        return (1 / self.bands) ** (1 / self.rows)

    def inclusion_probability(self, s: float | np.ndarray) -> float | np.ndarray:
        """Probability that two documents of Jaccard similarity `s` share at least one band."""
        return 1 - (1 - np.asarray(s, dtype=float) ** self.rows) ** self.bands


PRESETS = {
    "fineweb": MinhashParams(),
    "nemotron_cc": MinhashParams(unit="char", ngram=24, bands=20, rows=13, simplify=False),
}


def parse_spec(spec: str | MinhashParams) -> MinhashParams | None:
    """`"none"` -> None; `"fineweb"`; `"nemotron_cc,bands=10,rows=5"` (a preset with fields overridden)."""
    if isinstance(spec, MinhashParams):
        return spec
    name, *overrides = [p.strip() for p in str(spec).split(",")]
    if name.lower() in ("", "none", "false"):
        return None
    if name not in PRESETS:
        raise ValueError(f"unknown fuzzy dedup preset '{name}'; expected none, {', '.join(PRESETS)}")
    fields = {f.name: f.type for f in dataclasses.fields(MinhashParams)}
    values = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in fields or not value:
            raise ValueError(f"bad override '{item}' in '{spec}'; use key=value with key in {', '.join(fields)}")
        values[key] = value.lower() in ("1", "true", "yes") if fields[key] == "bool" else value
        values[key] = int(value) if fields[key] == "int" else values[key]
    params = dataclasses.replace(PRESETS[name], **values)
    if params.unit not in ("word", "char") or params.precision not in (32, 64) or params.ngram < 1:
        raise ValueError(f"'{spec}': unit must be word|char, precision 32|64, ngram >= 1")
    return params


# ---------------------------------------------------------------------------------------------------------------
# Text -> tokens, the way datatrove's simplify_text + SpaCyTokenizer("en").word_tokenize see it


@cache
def _text_rules():
    import regex
    from datatrove.utils.text import NUMBERS_PATTERN, PUNCTUATION

    punctuation = re.compile("[" + re.escape(PUNCTUATION) + "]")  # = PUNCTUATION_TRANS, 7x faster than translate
    # Nonspacing marks exactly as this Python's unicodedata sees them (datatrove filters on unicodedata.category),
    # matched with the fast \p{Mn} of `regex` corrected for its newer Unicode version (~140 code points differ).
    mn = {c for c in range(0x110000) if unicodedata.category(chr(c)) == "Mn"}
    every = "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x110000)))
    regex_mn = {ord(c) for c in regex.findall(r"\p{Mn}", every)}
    extra, missing = ("".join(regex.escape(chr(c)) for c in sorted(s)) for s in (regex_mn - mn, mn - regex_mn))
    nonspacing = regex.compile(rf"(?V1)[[\p{{Mn}}--[{extra}]]{missing}]+" if extra else rf"(?V1)[\p{{Mn}}{missing}]+")
    return NUMBERS_PATTERN, punctuation, nonspacing


def simplify(text: str) -> str:
    """datatrove's `simplify_text` with its default TextNormConfig: same output, no per-character Python loop."""
    numbers, punctuation, nonspacing = _text_rules()
    text = punctuation.sub(" ", numbers.sub("0", text.lower()))
    text = " ".join(text.split())  # \s+ -> " " and strip (str.split and re's \s agree on what is whitespace)
    if not text.isascii():
        text = nonspacing.sub("", unicodedata.normalize("NFD", text)).strip()
    return text


class _ChunkTokens(dict):
    """whitespace chunk -> its spaCy English tokens joined by " " (spaCy tokenizes each chunk on its own)."""

    SIMPLE = re.compile(r"[a-z]+|0")
    MAX_SIZE = 1 << 21

    def __init__(self):
        super().__init__()
        self._spacy = None

    def __missing__(self, chunk: str) -> str:
        if self._spacy is None:
            from datatrove.utils.word_tokenizers import load_word_tokenizer

            self._spacy = load_word_tokenizer("en").tokenizer.tokenizer  # the bare spaCy Tokenizer
            self._rules = set(self._spacy.rules)
        if self.SIMPLE.fullmatch(chunk) and chunk not in self._rules:
            value = chunk
        else:  # contractions ("dont" -> do nt), units ("0gb" -> 0 gb), non-ASCII affixes ...
            value = " ".join(t for t in (tok.text.strip() for tok in self._spacy(chunk)) if t)
        if len(self) >= self.MAX_SIZE:  # bounded memory on long runs
            self.clear()
        self[chunk] = value
        return value


_TOKENS = _ChunkTokens()


def word_string(text: str, simplified: bool = True) -> str:
    """The document's word tokens joined by single spaces (datatrove's tokens when `simplified`)."""
    if simplified:
        text = simplify(text)
    return " ".join(map(_TOKENS.__getitem__, text.split()))  # C-level loop; a miss calls __missing__


# ---------------------------------------------------------------------------------------------------------------
# xxh64 over many byte spans of one buffer at once (bit-equal to xxhash.xxh64_intdigest of each span)

_P1, _P2, _P3, _P4, _P5 = (
    np.uint64(11400714785074694791),
    np.uint64(14029467366897019727),
    np.uint64(1609587929392839161),
    np.uint64(9650029242287828579),
    np.uint64(2870177450012600261),
)


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _round(acc: np.ndarray, lane: np.ndarray) -> np.ndarray:
    return _rotl(acc + lane * _P2, 31) * _P1


def xxh64_spans(buf: bytes, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """uint64 xxh64 (seed 0) of `buf[s : s + n]` for every (s, n); vectorized across spans."""
    pad = buf + b"\0" * 8
    n_bytes = len(buf) + 1
    u64 = np.ndarray((n_bytes,), dtype="<u8", buffer=pad, strides=(1,))  # unaligned 8-byte load at any offset
    u32 = np.ndarray((n_bytes,), dtype="<u4", buffer=pad, strides=(1,))
    u8 = np.frombuffer(pad, dtype=np.uint8)
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    with np.errstate(over="ignore"):
        h = np.full(len(starts), _P5, dtype=np.uint64)
        pos = starts.copy()
        stripes = lengths >> 5
        long = np.flatnonzero(stripes)
        if long.size:  # four accumulators over 32-byte stripes
            p = pos[long]
            v = [np.full(long.size, x, dtype=np.uint64) for x in (_P1 + _P2, _P2, np.uint64(0), -_P1)]
            todo = np.arange(long.size)
            for k in range(int(stripes[long].max())):
                todo = todo[stripes[long][todo] > k]
                q = p[todo] + 32 * k
                for j in range(4):
                    v[j][todo] = _round(v[j][todo], u64[q + 8 * j])
            acc = _rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)
            for j in range(4):
                acc = (acc ^ _round(np.zeros_like(acc), v[j])) * _P1 + _P4
            h[long] = acc
            pos[long] += stripes[long] << 5
        h += lengths.astype(np.uint64)
        rest = lengths & 31
        for k in range(3):  # up to three 8-byte lanes
            i = np.flatnonzero((rest >> 3) > k)
            if not i.size:
                break
            h[i] = _rotl(h[i] ^ _round(np.zeros(i.size, np.uint64), u64[pos[i]]), 27) * _P1 + _P4
            pos[i] += 8
        i = np.flatnonzero(rest & 4)
        if i.size:
            h[i] = _rotl(h[i] ^ (u32[pos[i]].astype(np.uint64) * _P1), 23) * _P2 + _P3
            pos[i] += 4
        for k in range(3):  # up to three single bytes
            i = np.flatnonzero((rest & 3) > k)
            if not i.size:
                break
            h[i] = _rotl(h[i] ^ (u8[pos[i]].astype(np.uint64) * _P5), 11) * _P1
            pos[i] += 1
        h ^= h >> np.uint64(33)
        h *= _P2
        h ^= h >> np.uint64(29)
        h *= _P3
        h ^= h >> np.uint64(32)
    return h


_Q1, _Q2, _Q3, _Q4, _Q5 = (np.uint32(x) for x in (2654435761, 2246822519, 3266489917, 668265263, 374761393))


def _rotl32(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def xxh32_spans(buf: bytes, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """uint32 xxh32 (seed 0) of `buf[s : s + n]` for every (s, n) (datatrove's hash at precision 32)."""
    pad = buf + b"\0" * 4
    u32 = np.ndarray((len(buf) + 1,), dtype="<u4", buffer=pad, strides=(1,))
    u8 = np.frombuffer(pad, dtype=np.uint8)
    starts, lengths = np.asarray(starts, np.int64), np.asarray(lengths, np.int64)
    with np.errstate(over="ignore"):
        h = np.full(len(starts), _Q5, dtype=np.uint32)
        pos = starts.copy()
        stripes = lengths >> 4
        long = np.flatnonzero(stripes)
        if long.size:
            p = pos[long]
            v = [np.full(long.size, x, dtype=np.uint32) for x in (_Q1 + _Q2, _Q2, np.uint32(0), -_Q1)]
            todo = np.arange(long.size)
            for k in range(int(stripes[long].max())):
                todo = todo[stripes[long][todo] > k]
                q = p[todo] + 16 * k
                for j in range(4):
                    v[j][todo] = _rotl32(v[j][todo] + u32[q + 4 * j] * _Q2, 13) * _Q1
            h[long] = _rotl32(v[0], 1) + _rotl32(v[1], 7) + _rotl32(v[2], 12) + _rotl32(v[3], 18)
            pos[long] += stripes[long] << 4
        h += lengths.astype(np.uint32)
        rest = lengths & 15
        for k in range(3):  # up to three 4-byte lanes
            i = np.flatnonzero((rest >> 2) > k)
            if not i.size:
                break
            h[i] = _rotl32(h[i] + u32[pos[i]] * _Q3, 17) * _Q4
            pos[i] += 4
        for k in range(3):  # up to three single bytes
            i = np.flatnonzero((rest & 3) > k)
            if not i.size:
                break
            h[i] = _rotl32(h[i] + u8[pos[i]].astype(np.uint32) * _Q5, 11) * _Q1
            pos[i] += 1
        h ^= h >> np.uint32(15)
        h *= _Q2
        h ^= h >> np.uint32(13)
        h *= _Q3
        h ^= h >> np.uint32(16)
    return h


# ---------------------------------------------------------------------------------------------------------------
# Shingles and signatures


def word_ngram_hashes(doc_strings: list[str], n: int, precision: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """xxh64 of every " "-joined word n-gram of each document (tokens already joined by single spaces).

    Returns (hashes uint64 [M], offsets int64 [N+1]): document i's n-grams are hashes[offsets[i]:offsets[i+1]],
    in text order (repeats kept), equal to datatrove's `xxhash64(" ".join(ngram))` (xxhash32 at precision 32).
    """
    buf = "\n".join(doc_strings).encode()  # no token contains whitespace, so " " and "\n" delimit tokens and docs
    arr = np.frombuffer(buf, dtype=np.uint8)
    seps = np.flatnonzero((arr == 32) | (arr == 10))
    tok_start = np.concatenate([[0], seps + 1])
    tok_end = np.concatenate([seps, [len(arr)]])
    tok_doc = np.concatenate([[0], np.cumsum(arr[seps] == 10)])
    k = len(tok_start) - n + 1
    if k <= 0:
        return np.zeros(0, np.uint64), np.zeros(len(doc_strings) + 1, np.int64)
    starts, ends = tok_start[:k], tok_end[n - 1 :]
    keep = (tok_doc[:k] == tok_doc[n - 1 :]) & (ends > starts)  # n tokens of one document (an empty doc has none)
    starts, ends, docs = starts[keep], ends[keep], tok_doc[:k][keep]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(docs, minlength=len(doc_strings)))])
    return _span_hash(precision)(buf, starts, ends - starts).astype(np.uint64), offsets


def _span_hash(precision: int):
    return xxh32_spans if precision == 32 else xxh64_spans


def char_ngram_hashes(texts: list[str], n: int, precision: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """xxh64 of the UTF-32-LE bytes of every n-character window of each text; (hashes, offsets) as above."""
    buf = "".join(texts).encode("utf-32-le")
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    doc_start = np.concatenate([[0], np.cumsum(lens)])
    counts = np.maximum(lens - n + 1, 0)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    starts = np.repeat(doc_start[:-1] - offsets[:-1], counts) + np.arange(offsets[-1])  # char index of window
    return _span_hash(precision)(buf, 4 * starts, np.full(len(starts), 4 * n)).astype(np.uint64), offsets


def shingles(texts: list[str], params: MinhashParams) -> tuple[np.ndarray, np.ndarray]:
    """Hashed n-grams of each text under `params`: (hashes uint64 [M], offsets int64 [N+1])."""
    if params.unit == "char":
        texts = [simplify(t) if params.simplify else t for t in texts]
        return char_ngram_hashes(texts, params.ngram, params.precision)
    return word_ngram_hashes([word_string(t, params.simplify) for t in texts], params.ngram, params.precision)


@cache
def permutations(num_hashes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datatrove's (a, b) permutation parameters, shape (num_hashes,) each."""
    gen = np.random.RandomState(seed)
    a = gen.randint(1, MERSENNE, dtype=np.uint64, size=(1, num_hashes))
    b = gen.randint(0, MERSENNE, dtype=np.uint64, size=(1, num_hashes))
    return a[0], b[0]


def minhash(hashes: np.ndarray, offsets: np.ndarray, params: MinhashParams) -> tuple[np.ndarray, np.ndarray]:
    """Signatures [N, bands*rows] (uint64, or uint32 at precision 32) and a mask of documents that have one.

    A document without a single n-gram (shorter than `ngram` tokens) has no signature, as in datatrove, and can
    never be a fuzzy duplicate; its row is all ones and `valid` is False.
    """
    a, b = permutations(params.num_hashes, params.seed)
    n_docs = len(offsets) - 1
    out = np.full((n_docs, params.num_hashes), MAX64, dtype=np.uint64)
    doc_of = np.repeat(np.arange(n_docs), np.diff(offsets))
    with np.errstate(over="ignore"):
        for lo in range(0, len(hashes), _CHUNK):
            hi = min(lo + _CHUNK, len(hashes))
            x = np.multiply(hashes[lo:hi, None], a)  # wraps mod 2**64 exactly like datatrove's uint64 numpy math
            x += b
            top = x >> np.uint64(61)  # x mod (2**61-1) = (x & M) + (x >> 61), then one conditional subtraction
            x &= MERSENNE
            x += top
            np.subtract(x, MERSENNE, out=x, where=x >= MERSENNE)
            if params.precision == 32:  # datatrove truncates before taking the minimum
                x &= np.uint64(0xFFFFFFFF)
            docs = doc_of[lo:hi]
            first = np.flatnonzero(np.concatenate([[True], docs[1:] != docs[:-1]]))
            seg_docs = docs[first]
            out[seg_docs] = np.minimum(out[seg_docs], np.minimum.reduceat(x, first, axis=0))
    valid = np.diff(offsets) > 0
    if params.precision == 32:
        out = np.minimum(out, np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return out, valid


def signatures(texts: list[str], params: MinhashParams) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures of `texts`: ([N, bands*rows] array, valid mask [N])."""
    return minhash(*shingles(texts, params), params)


def band_keys(sigs: np.ndarray, params: MinhashParams) -> np.ndarray:
    """One uint64 LSH bucket key per (document, band) [N, bands]: xxh64 of the band's bytes, mixed with the band.

    Two documents land in the same bucket of band j iff their rows of band j are equal (up to a 2**-64 collision).
    """
    sigs = np.ascontiguousarray(sigs)
    n, width = sigs.shape[0], sigs.dtype.itemsize * params.rows
    starts = np.arange(n * params.bands, dtype=np.int64) * width
    keys = xxh64_spans(sigs.tobytes(), starts, np.full(len(starts), width)).reshape(n, params.bands)
    with np.errstate(over="ignore"):
        return keys ^ (np.arange(params.bands, dtype=np.uint64) * _P1)
