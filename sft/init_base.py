"""Build a random-init hybrid Mamba-Transformer base checkpoint (`NemotronHForCausalLM`) with a local tokenizer.

The checkpoint stands in for `nvidia/NVIDIA-Nemotron-Nano-12B-v2-Base` in the demo and the tests: the same
architecture (Mamba-2, attention and MLP layers in a Nemotron-H pattern), a byte-level BPE tokenizer trained here
(no network), the Nemotron Nano 2 special tokens and the training chat template from `sft/chat_template.jinja`.
The folder loads with `AutoModelForCausalLM` / `AutoTokenizer` (no remote code); Mamba runs on the transformers
torch path when the `mamba_ssm`/`causal_conv1d` kernels are absent (CPU).

Local:    nanoforge init-base --output_dir runs/base --preset tiny
Cluster:  nanoforge init-base --config sft/configs/init_base.yaml   (a random base is cheap; build it once, anywhere)
"""

from __future__ import annotations

import hashlib
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.config import ConfigError, parse
from pipelines.lineage import Artifact

CHAT_TEMPLATE = Path(__file__).with_name("chat_template.jinja")

# Special tokens: ids 0-2 match NemotronHConfig's pad/bos/eos defaults; the role markers and end of turn are the
# ones the real Nemotron Nano 2 tokenizer uses. `<think>`/`</think>` are added but not "special", so decoding with
# skip_special_tokens=True keeps the reasoning delimiters (the verifier and the `select` stage parse them).
PAD, BOS, EOS_DOC = "<pad>", "<s>", "</s>"
SYSTEM, TURN, END_OF_TURN = "<SPECIAL_10>", "<SPECIAL_11>", "<SPECIAL_12>"
SPECIAL_TOKENS = [PAD, BOS, EOS_DOC, SYSTEM, TURN, END_OF_TURN]
THINK_TOKENS = ["<think>", "</think>"]

# Layer patterns use Nemotron-H's notation: M = Mamba-2, * = attention, - = MLP. Nano 2 is ~half Mamba, half MLP,
# with attention in ~8% of the layers; `small` keeps those ratios, `tiny` keeps one of each.
PRESETS: dict[str, dict] = {
    "tiny": dict(
        vocab_size=512,
        pattern="M*M-",
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        mamba_num_heads=8,
        mamba_head_dim=16,  # 8 x 16 = 2 x hidden
        ssm_state_size=16,
        n_groups=1,
        chunk_size=32,
    ),
    "small": dict(
        vocab_size=8192,
        pattern="M-M-M*-M-M-M*-M-",
        hidden_size=512,
        intermediate_size=1536,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=64,
        mamba_num_heads=16,
        mamba_head_dim=64,  # 16 x 64 = 2 x hidden
        ssm_state_size=64,
        n_groups=1,
        chunk_size=128,
    ),
}


@dataclass
class InitBaseConfig:
    output_dir: str = field(default="runs/base", metadata={"help": "Checkpoint folder to write."})
    preset: str = field(default="tiny", metadata={"help": f"Model size: one of {', '.join(PRESETS)}."})
    seed: int = field(default=0, metadata={"help": "Seed for the weights and the built-in tokenizer corpus."})
    force: bool = field(default=False, metadata={"help": "Rebuild even if an up-to-date checkpoint exists."})


def builtin_corpus(seed: int, n: int = 3000) -> list[str]:
    """Generated English sentences and arithmetic worked solutions to train the tokenizer on (no network)."""
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
        texts.append(
            f"{who} has {a} {what} and {rng.choice(verbs)} {b} more. How many {what} does {who} have now?\n"
            f"Step 1: {a} + {b} = {a + b}.\nThe answer is {a + b}."
        )
        texts.append(f"Each box holds {c} {what}. {a} boxes hold {a} * {c} = {a * c} {what}. #### {a * c}")
        texts.append(
            f"{rng.choice(openers)} people in {rng.choice(topics)} talked about {rng.choice(topics)}. "
            f"It was {rng.choice(['quiet', 'busy', 'cold', 'sunny', 'important'])}, and {who} wrote it down."
        )
    return texts


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


def build_model(preset: str, vocab_size: int, tokenizer, seed: int):
    import torch
    from transformers import GenerationConfig, NemotronHConfig, NemotronHForCausalLM

    p = dict(PRESETS[preset])
    p.pop("vocab_size")
    pattern = p.pop("pattern")
    config = NemotronHConfig(
        vocab_size=vocab_size,
        hybrid_override_pattern=pattern,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **p,
    )
    torch.manual_seed(seed)
    model = NemotronHForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(EOS_DOC)],
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def build_base(output_dir: str | Path, preset: str = "tiny", seed: int = 0, corpus_texts=None, force=False) -> Path:
    """Write a random `NemotronHForCausalLM` + tokenizer + chat template to `output_dir` (a checkpoint Artifact).

    `corpus_texts` (an iterable of strings) trains the tokenizer; without it a built-in generated corpus is used.
    A rerun with the same preset, seed and corpus is skipped unless `force`.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    texts = list(corpus_texts) if corpus_texts is not None else builtin_corpus(seed)
    config = {"preset": preset, "seed": seed, **PRESETS[preset]}
    if corpus_texts is not None:  # identity of a caller-given corpus: its content
        config["corpus_sha256"] = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    config["chat_template_sha256"] = hashlib.sha256(CHAT_TEMPLATE.read_bytes()).hexdigest()
    art = Artifact(output_dir, kind="checkpoint", stage="init-base", config=config)
    if art.up_to_date() and not force:
        print(art.skip_message())
        return art.path
    with art.writing(resume=False) as tmp:
        tokenizer = train_tokenizer(texts, PRESETS[preset]["vocab_size"])
        model = build_model(preset, len(tokenizer), tokenizer, seed)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        n_params = sum(p.numel() for p in model.parameters())
        art.counts = {"parameters": n_params, "vocab_size": len(tokenizer), "layers": len(model.config.layer_types)}
        art.extra = {"model": {"architecture": "NemotronHForCausalLM", "pattern": PRESETS[preset]["pattern"]}}
    print(f"[init-base] wrote {art.path}: {preset} preset, {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}")
    return art.path


def parse_args(argv: list[str] | None = None) -> InitBaseConfig:
    return parse(InitBaseConfig, argv=argv)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    build_base(cfg.output_dir, preset=cfg.preset, seed=cfg.seed, force=cfg.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
