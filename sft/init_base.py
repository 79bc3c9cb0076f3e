"""Build a random-init hybrid Mamba-Transformer base checkpoint (`NemotronHForCausalLM`) with a local tokenizer.

The checkpoint stands in for `nvidia/NVIDIA-Nemotron-Nano-12B-v2-Base` in the demo and the tests: the same
architecture (Mamba-2, attention and MLP layers in a Nemotron-H pattern), a byte-level BPE tokenizer trained here
(no network), the Nemotron Nano 2 special tokens and the training chat template from `sft/chat_template.jinja`.
The folder loads with `AutoModelForCausalLM` / `AutoTokenizer` (no remote code); Mamba runs on the transformers
torch path when the `mamba_ssm`/`causal_conv1d` kernels are absent (CPU).

Local:    nanoforge init-base --output_dir runs/base --preset tiny
Cluster:  nanoforge init-base --config sft/configs/init_base_small.yaml   (cheap: build once, on any node)
"""

from __future__ import annotations

import glob
import hashlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.core.artifacts import Artifact
from pipelines.core.config import ConfigError, parse
from sft.tokenizer import CHAT_TEMPLATE, EOS_DOC, builtin_corpus, read_corpus, train_tokenizer

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
    corpus_paths: list[str] = field(
        default_factory=list,
        metadata={
            "help": "JSONL(.gz) files, folders or globs whose `text` field trains the tokenizer (e.g. the demo-data "
            "web shards); empty: a built-in generated English + arithmetic corpus."
        },
    )
    force: bool = field(default=False, metadata={"help": "Rebuild even if an up-to-date checkpoint exists."})


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


def build_base(
    output_dir: str | Path,
    preset: str = "tiny",
    seed: int = 0,
    corpus_texts: Iterable[str] | None = None,
    *,
    corpus_paths: list[str] | None = None,
    force: bool = False,
) -> Path:
    """Write a random `NemotronHForCausalLM` + tokenizer + chat template to `output_dir` (a checkpoint Artifact).

    The tokenizer trains on `corpus_texts` (identified by a hash of their content), else on the `text` of the
    JSONL rows under `corpus_paths` (identified like any stage input), else on `builtin_corpus(seed)`.
    A rerun with the same preset, seed, corpus and chat template is skipped unless `force`.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    missing = [p for p in corpus_paths or () if not glob.glob(p)]
    if missing:
        raise ConfigError(f"corpus_paths: nothing found at {', '.join(missing)}")
    texts = list(corpus_texts) if corpus_texts is not None else None
    config = {"preset": preset, "seed": seed, **PRESETS[preset]}
    config["chat_template_sha256"] = hashlib.sha256(CHAT_TEMPLATE.read_bytes()).hexdigest()
    if texts is not None:
        config["corpus_sha256"] = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    art = Artifact(output_dir, kind="checkpoint", stage="init-base", config=config, inputs=corpus_paths or ())
    if art.up_to_date() and not force:
        print(art.skip_message())
        return art.path
    with art.writing(resume=False) as tmp:
        counts = {}
        if texts is None and corpus_paths:
            texts, counts = read_corpus(corpus_paths)
        elif texts is None:
            texts = builtin_corpus(seed)
        tokenizer = train_tokenizer(texts, PRESETS[preset]["vocab_size"])
        model = build_model(preset, len(tokenizer), tokenizer, seed)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        n_params = sum(p.numel() for p in model.parameters())
        art.counts = {"parameters": n_params, "vocab_size": len(tokenizer), "tokenizer_texts": len(texts), **counts}
        art.extra = {"model": {"architecture": "NemotronHForCausalLM", "layer_pattern": PRESETS[preset]["pattern"]}}
    print(f"[init-base] wrote {art.path}: {preset}, {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}")
    return art.path


def parse_args(argv: list[str] | None = None) -> InitBaseConfig:
    return parse(InitBaseConfig, argv=argv)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    build_base(cfg.output_dir, preset=cfg.preset, seed=cfg.seed, corpus_paths=cfg.corpus_paths, force=cfg.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
