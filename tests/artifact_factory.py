"""Tiny but complete artifacts of every kind, written through `pipelines.core.artifacts.Artifact` (for card/publish
tests).

Each builder returns the artifact directory. Layouts follow DESIGN.md's contracts: curate writes `documents/`,
`rejected/`, `quarantine/`; mix writes one directory per phase with `blend.json` and Megatron `.bin/.idx`;
select writes SFT/preference/RL sets; a checkpoint is a `save_pretrained` folder with `eval.json`.
Configs carry fake credentials (`SECRETS`) so tests can check they never reach a card or an upload.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.blending.plan import write_megatron
from pipelines.core.artifacts import Artifact

HF_TOKEN = "hf_" + "FakeTokenForTests0123456789abcd"
API_KEY = "sk-local-test-key-42"
SECRETS = (HF_TOKEN, API_KEY)


def write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def raw_shard(root: Path) -> Path:
    """A raw JSONL shard of 10 web documents (the start of every lineage)."""
    path = root / "raw" / "web-00000.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(json.dumps({"id": f"doc{i}", "text": f"document number {i} " * 20}) + "\n" for i in range(10))
    )
    return path


def documents(root: Path, raw: Path, name: str = "curate", min_words: int = 50) -> Path:
    """10 input documents: 6 kept, 3 rejected (two reasons), 1 quarantined."""
    config = {"input_paths": [str(raw)], "output_dir": str(root / name), "min_words": min_words, "hub_token": HF_TOKEN}
    art = Artifact(root / name, kind="documents", stage="curate", config=config, inputs=[raw])
    with art.writing() as tmp:
        kept = [
            {"id": f"doc{i}", "text": f"document number {i}", "source": "web", "url": f"https://e.x/{i}"}
            for i in range(6)
        ]
        write_parquet(tmp / "documents" / "part-00000.parquet", kept[:4])
        write_parquet(tmp / "documents" / "part-00001.parquet", kept[4:])
        reasons = ["gopher_short_document", "gopher_short_document", "contaminated:gsm8k"]
        rejected = [
            {"id": f"doc{6 + i}", "source": "web", "stage": "filter", "reason": r} for i, r in enumerate(reasons)
        ]
        write_parquet(tmp / "rejected" / "part-00000.parquet", rejected)
        bad = [{"file": str(raw), "line_or_row": 9, "error": "invalid JSON", "raw": "{oops"}]
        write_parquet(tmp / "quarantine" / "part-00000.parquet", bad)
        art.counts = {
            "input": 10,
            "kept": 6,
            "rejected": {"gopher_short_document": 2, "contaminated:gsm8k": 1},
            "quarantined": 1,
        }
        art.extra = {"decontamination": {"gsm8k": {"ngram": 13, "documents_removed": 1}}}
    return art.path


def quality(root: Path, docs: Path) -> Path:
    """Quality buckets over the 6 curated documents: 5 kept with their bucket and label, 1 dropped by a heuristic."""
    config = {"input_paths": [str(docs)], "classifiers": ["fasttext"], "output_dir": str(root / "quality")}
    art = Artifact(root / "quality", kind="documents", stage="quality", config=config, inputs=[docs])
    with art.writing() as tmp:
        labels = {19: "High", 18: "Medium-High", 12: "Medium", 7: "Medium-Low", 0: "Low"}
        rows = [
            {
                "id": f"doc{i}",
                "text": f"document number {i}",
                "source": "web",
                "url": f"https://e.x/{i}",
                "quality_score_fasttext": b / 19,
                "quality_bucket": b,
                "quality_label": label,
            }
            for i, (b, label) in enumerate(labels.items())
        ]
        write_parquet(tmp / "documents" / "part-00000.parquet", rows)
        write_parquet(
            tmp / "rejected" / "part-00000.parquet",
            [{"id": "doc5", "source": "web", "stage": "quality", "reason": "gopher_repetition"}],
        )
        (tmp / "thresholds.json").write_text(json.dumps({"fasttext": [i / 20 for i in range(1, 20)]}))
        art.counts = {
            "input": 6,
            "kept": 5,
            "rejected": {"gopher_repetition": 1},
            "buckets": {str(b): 1 for b in labels},
        }
    return art.path


def blend(root: Path, docs: Path) -> Path:
    """Two phases with `blend.json` each, and Megatron token files for phase 1."""
    config = {"sources": [str(docs)], "phases": [0.6, 0.4], "seed": 0, "output_dir": str(root / "mix")}
    art = Artifact(root / "mix", kind="blend", stage="mix", config=config, inputs=[docs])
    with art.writing() as tmp:
        for phase, n in (("phase1", 5), ("phase2", 3)):
            write_parquet(
                tmp / phase / "part-00000.parquet",
                [{"id": f"{phase}-{i}", "text": "t", "source": "web"} for i in range(n)],
            )
            weights = {"web": {"weight": 0.7, "target_tokens": 700, "achieved_tokens": 698, "epochs": 1.0}}
            weights["wiki"] = {"weight": 0.3, "target_tokens": 300, "achieved_tokens": 301, "epochs": 2.5}
            (tmp / phase / "blend.json").write_text(json.dumps(weights))
        # Megatron token files for phase 1 as mix writes them: 5 documents of 3, 4, 5, 2, 2 tokens.
        write_megatron(tmp / "phase1" / "tokens", np.array([3, 4, 5, 2, 2]), np.arange(16), np.uint16)
        art.counts = {"documents": 8, "tokens": 1000}
    return art.path


def traces(root: Path, prompts: Path) -> Path:
    """4 prompts x 2 samples as one root-level shard (the `default` config)."""
    config = {
        "prompts_path": str(prompts),
        "backend": "transformers",
        "model_name_or_path": "nvidia/NVIDIA-Nemotron-Nano-12B-v2-Base",
    }
    config |= {"num_samples": 2, "temperature": 0.6, "top_p": 0.95, "max_new_tokens": 256, "api_key": API_KEY}
    art = Artifact(root / "synth", kind="traces", stage="synth", config=config, inputs=[prompts])
    with art.writing() as tmp:
        rows = [
            {
                "id": f"p{i}:{k}",
                "prompt_id": f"p{i}",
                "messages": [
                    {"role": "user", "content": f"{i}+1?"},
                    {"role": "assistant", "content": f"<think>{i}+1</think>{i + 1}"},
                ],
                "verified": (i + k) % 3 != 0,
                "num_generated_tokens": 10 + i,
            }
            for i in range(4)
            for k in range(2)
        ]
        write_parquet(tmp / "part-00000.parquet", rows)
        art.counts = {"prompts": 4, "generated": 8, "verified": {"true": 5, "false": 3}, "errors": 0}
        art.extra = {
            "generator": {"model": config["model_name_or_path"], "revision": "main", "backend": "transformers"}
        }
    return art.path


def sft(root: Path, trace_dir: Path) -> Path:
    """An SFT set with `train-`/`test-` shards (two splits) made from the traces."""
    art = Artifact(
        root / "select" / "sft", kind="sft", stage="select", config={"no_think_share": 0.1}, inputs=[trace_dir]
    )
    with art.writing() as tmp:
        msgs = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "<think>1+1=2</think>2"}]
        write_parquet(tmp / "train-00000.parquet", [{"messages": msgs}] * 4)
        write_parquet(tmp / "test-00000.parquet", [{"messages": msgs}])
        write_parquet(
            tmp / "rejected" / "part-00000.parquet",
            [{"id": f"p{i}:1", "prompt_id": f"p{i}", "reason": "not_verified"} for i in range(3)],
        )
        art.counts = {"input": 8, "kept": 5, "rejected": {"not_verified": 3}}
    return art.path


def preference(root: Path, trace_dir: Path) -> Path:
    art = Artifact(
        root / "select" / "preference",
        kind="preference",
        stage="select",
        config={"pairs": "correct_vs_incorrect"},
        inputs=[trace_dir],
    )
    with art.writing() as tmp:
        row = {
            "prompt": [{"role": "user", "content": "1+1?"}],
            "chosen": [{"role": "assistant", "content": "2"}],
            "rejected": [{"role": "assistant", "content": "3"}],
        }
        write_parquet(tmp / "part-00000.parquet", [row] * 3)
        write_parquet(tmp / "rejected" / "part-00000.parquet", [{"prompt_id": "p3", "reason": "all_correct"}])
        art.counts = {"prompts": 4, "pairs": 3, "kept": 3, "unpaired": {"all_correct": 1}}
    return art.path


def rl_prompts(root: Path, trace_dir: Path) -> Path:
    art = Artifact(
        root / "select" / "rl_prompts",
        kind="rl_prompts",
        stage="select",
        config={"pass_rate": [0.0, 1.0]},
        inputs=[trace_dir],
    )
    with art.writing() as tmp:
        row = {"prompt": [{"role": "user", "content": "2+2?"}], "answer": "4", "verifier": "math"}
        write_parquet(tmp / "part-00000.parquet", [row] * 2)
        reasons = ["pass_rate_1", "pass_rate_0"]
        write_parquet(tmp / "rejected" / "part-00000.parquet", [row | {"reason": r} for r in reasons])
        art.counts = {"prompts": 4, "kept": 2, "dropped": {"pass_rate_1": 1, "pass_rate_0": 1}}
    return art.path


def checkpoint(root: Path, sft_set: Path) -> Path:
    """A `save_pretrained`-style folder: safetensors weights plus the pickles a Trainer leaves behind."""
    from safetensors.numpy import save_file

    config = {"model_name_or_path": "nvidia/NVIDIA-Nemotron-Nano-12B-v2-Base", "dataset_name": str(sft_set)}
    config |= {"learning_rate": 2e-5, "max_steps": 10, "hub_token": HF_TOKEN}
    art = Artifact(root / "sft_ckpt", kind="checkpoint", stage="sft", config=config, inputs=[sft_set])
    with art.writing() as tmp:
        save_file({"w": np.ones((4, 4), dtype=np.float32)}, tmp / "model.safetensors")
        (tmp / "config.json").write_text(
            json.dumps({"architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h", "hidden_size": 64})
        )
        (tmp / "tokenizer.json").write_text("{}")
        (tmp / "eval.json").write_text(
            json.dumps({"gsm8k": {"think": {"pass@1": 0.4375}, "no_think": {"pass@1": 0.25}}})
        )
        (tmp / "training_args.bin").write_bytes(b"\x80\x04pickle")  # Trainer pickles its args: never uploaded
        (tmp / "checkpoint-5").mkdir()
        (tmp / "checkpoint-5" / "optimizer.pt").write_bytes(b"\x80\x04pickle")
        log_history = [{"step": s, "loss": 2.0 / s} for s in range(1, 11)]
        (tmp / "trainer_state.json").write_text(json.dumps({"global_step": 10, "log_history": log_history}))
        art.counts = {"train_samples": 5, "steps": 10}
        art.extra = {"eval": {"think": 0.4375, "no_think": 0.25}}  # pass@1 per reasoning mode, as sft records it
    return art.path


def synthetic_documents(root: Path, docs: Path) -> Path:
    """rephrase output: 4 (document, task) units from 2 labelled documents, 3 kept, 1 rejected, with prompts."""
    from pipelines.rephrasing.filters import DOCUMENT_SCHEMA, REJECTED_SCHEMA

    config = {
        "input_path": str(docs),
        "backend": "openai",
        "model_name_or_path": "served-model",
        "temperature": 0.7,
        "max_new_tokens": 256,
        "api_key": API_KEY,
        "output_dir": str(root / "rephrase"),
    }
    art = Artifact(root / "rephrase", kind="synthetic_documents", stage="rephrase", config=config, inputs=[docs])
    generator = {"model": "served-model", "revision": None, "backend": "openai"}
    sampling = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 256, "seed": 1}
    with art.writing() as tmp:
        (tmp / "prompts").mkdir()
        (tmp / "prompts" / "distill.md").write_text("Shorten this text.\n\nText:\n{{ document }}\n")
        (tmp / "prompts" / "wikipedia_rephrase.md").write_text("Rewrite this as Wikipedia.\n\nText:\n{{ document }}\n")
        kept = [
            {
                "id": f"doc{i}:{task}",
                "text": f"synthetic text {i}",
                "source": f"synthetic/{task}",
                "source_id": f"doc{i}",
                "task": task,
                "prompt_hash": "ab" * 32,
                "generator": generator,
                "sampling_params": sampling,
                "quality_label": "High" if task == "distill" else "Low",
            }
            for i, task in ((0, "distill"), (1, "wikipedia_rephrase"), (2, "wikipedia_rephrase"))
        ]
        table = pa.Table.from_pylist(kept, schema=DOCUMENT_SCHEMA)
        (tmp / "documents").mkdir()
        pq.write_table(table, tmp / "documents" / "part-00000.parquet")
        rejected = [
            {
                "id": "doc3:distill",
                "source_id": "doc3",
                "task": "distill",
                "stage": "rephrase",
                "reason": "copy_of_source",
                "text": "document number 3",
            }
        ]
        (tmp / "rejected").mkdir()
        pq.write_table(pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA), tmp / "rejected" / "part-00000.parquet")
        art.counts = {"documents_input": 4, "input": 4, "kept": 3, "rejected": {"copy_of_source": 1}}
        art.extra = {
            "prompts": {"distill": {"file": "distill.md", "sha256": "ab" * 32, "labels": ["High"]}},
            "generator": generator,
        }
    return art.path


def all_kinds(root: Path) -> dict[str, Path]:
    """One artifact of every kind, wired into one lineage: raw -> documents -> blend; prompts -> traces -> sets ->
    ckpt."""
    raw = raw_shard(root)
    docs = documents(root, raw)
    prompts = root / "raw" / "prompts.jsonl"
    prompts.write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    trace_dir = traces(root, prompts)
    sft_set = sft(root, trace_dir)
    return {
        "documents": docs,
        "blend": blend(root, docs),
        "synthetic_documents": synthetic_documents(root, docs),
        "traces": trace_dir,
        "sft": sft_set,
        "preference": preference(root, trace_dir),
        "rl_prompts": rl_prompts(root, trace_dir),
        "checkpoint": checkpoint(root, sft_set),
    }
