"""The base tokenizer: byte-level BPE trained locally, with the Nemotron Nano 2 special tokens and chat template.

Used by `sft/init_base.py`. The corpus is the `text` of JSONL rows (e.g. the demo-data web shards) or, by default,
a small generated English + arithmetic + chat corpus, so building a base never needs the network.
"""

from __future__ import annotations

import glob
import gzip
import json
import random
from pathlib import Path

from pipelines.core.config import ConfigError

CHAT_TEMPLATE = Path(__file__).with_name("chat_template.jinja")

# Special tokens: ids 0-2 match NemotronHConfig's pad/bos/eos defaults; the role markers and end of turn are the
# ones the real Nemotron Nano 2 tokenizer uses. `<think>`/`</think>` are added but not "special", so decoding with
# skip_special_tokens=True keeps the reasoning delimiters (the verifier and the `select` stage parse them).
PAD, BOS, EOS_DOC = "<pad>", "<s>", "</s>"
SYSTEM, TURN, END_OF_TURN = "<SPECIAL_10>", "<SPECIAL_11>", "<SPECIAL_12>"
SPECIAL_TOKENS = [PAD, BOS, EOS_DOC, SYSTEM, TURN, END_OF_TURN]
THINK_TOKENS = ["<think>", "</think>"]


def builtin_corpus(seed: int, n: int = 3000) -> list[str]:
    """Generated English sentences, arithmetic worked solutions and chat turns (3 texts per `n`; no network)."""
    rng = random.Random(seed)
    names = ["Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lena"]
    things = ["apples", "books", "coins", "marbles", "pencils", "stickers", "cookies", "cards", "shells", "stamps"]
    verbs = ["buys", "finds", "gets", "collects", "receives", "picks"]
    topics = ["the river", "the market", "a small town", "the library", "the old bridge", "the garden", "science"]
    openers = ["In the morning,", "Every year,", "According to the report,", "After the storm,", "Today,"]
    texts = []
    for _ in range(n):
        a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 9)
        who, what = rng.choice(names), rng.choice(things)
        # Role words and think tags as the chat template lays them out, so they become single tokens.
        texts.append(
            f"System\nUser\n{who} has {a} {what} and {rng.choice(verbs)} {b} more. How many {what} does {who} "
            f"have now?\nAssistant\n<think>\nStep 1: {a} + {b} = {a + b}.\n</think>\nThe answer is {a + b}."
        )
        texts.append(f"Each box holds {c} {what}. {a} boxes hold {a} * {c} = {a * c} {what}. #### {a * c}")
        texts.append(
            f"{rng.choice(openers)} people in {rng.choice(topics)} talked about {rng.choice(topics)}. "
            f"It was {rng.choice(['quiet', 'busy', 'cold', 'sunny', 'important'])}, and {who} wrote it down."
        )
    return texts


def row_text(line: str) -> str | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if not isinstance(row, dict):
        return None
    if isinstance(row.get("text"), str):
        return row["text"]
    if isinstance(row.get("question"), str) and isinstance(row.get("answer"), str):
        return row["question"] + "\n" + row["answer"]
    return None


def read_corpus(paths: list[str]) -> tuple[list[str], dict[str, int]]:
    """The text of every JSONL(.gz) row under `paths` (files, folders or globs), with counts of what was used.

    A row's text is its `text` field (web documents) or its `question` and `answer` (GSM8K-style problems). Rows
    with neither (the demo corpus plants malformed lines) are counted as skipped, not lost silently: the counts go
    to the manifest.
    """
    files = []
    for path in paths:
        matches = sorted(glob.glob(path, recursive=True)) if glob.has_magic(path) else [path]
        for m in map(Path, matches):
            files += sorted(f for f in m.rglob("*.jsonl*") if f.is_file()) if m.is_dir() else [m]
    if not files:
        raise ConfigError(f"corpus_paths: no JSONL files found under {paths}")
    texts, skipped = [], 0
    for f in files:
        if not f.is_file():
            raise ConfigError(f"corpus_paths: {f} does not exist")
        with gzip.open(f, "rt", errors="replace") if f.suffix == ".gz" else open(f, errors="replace") as lines:
            for line in lines:
                text = row_text(line)
                if text is not None:
                    texts.append(text)
                else:
                    skipped += 1
    return texts, {"corpus_files": len(files), "corpus_rows": len(texts), "corpus_rows_skipped": skipped}


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE (GPT-2 style pre-tokenization) wrapped as a `PreTrainedTokenizerFast` with our chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AddedToken, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=END_OF_TURN,  # generation (and TRL) stop at the end of the assistant turn
        pad_token=PAD,
        extra_special_tokens=[EOS_DOC, SYSTEM, TURN],
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE.read_text()
    return tokenizer
