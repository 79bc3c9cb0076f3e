"""Logit distillation from a teacher into a (pruned) student with TRL's `GKDTrainer` (the Minitron recovery step).

Local:    nanoforge distill --config compress/configs/distill_demo.yaml
Cluster:  accelerate launch --num_processes 8 -m compress.distill --config compress/configs/distill_nano2_9b.yaml

`lmbda: 0` (no on-policy samples) makes GKD supervised knowledge distillation on the dataset's tokens: plain text
rows (`text`, e.g. a blend phase or a documents artifact) are distilled on every token, conversational rows
(`messages`, an SFT set) on the last assistant turn. The loss is the forward KL from the teacher's next-token
distribution at `temperature` (scaled by T^2, Hinton et al.), on the teacher's `distill_top_k` most likely tokens
(both distributions renormalized on them; 0 = the full vocabulary). TRL 1.16's GKD loss applies neither the temperature
(it only samples with it) nor a top-k, hence the one overridden method below. Before and after training the stage
measures, on `eval_samples` held-out rows, the KL to the teacher and the student's and teacher's LM loss
(`distill_eval` in the manifest); the math eval, resume and checkpoint writing are the other training stages'
(sft/common.py).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from trl import ModelConfig
from trl.experimental.gkd import GKDConfig, GKDTrainer

from pipelines.core.config import ConfigError, parse
from pipelines.core.datasets import load_split
from sft.common import (
    MetricsFile,
    ScriptArgs,
    checkpoint_artifact,
    checkpoint_writing,
    last_checkpoint,
    model_init_kwargs,
    prepare_trainer,
    save_checkpoint,
)


@dataclass
class DistillArgs:
    distill_top_k: int = field(
        default=0, metadata={"help": "Teacher tokens the KL covers (top-k, renormalized); 0 = all."}
    )
    text_field: str = field(
        default="text", metadata={"help": "Column of plain-text rows (rows with `messages` use the chat template)."}
    )
    eval_samples: int = field(default=32, metadata={"help": "Rows held out (the last N) for the before/after KL."})


def forward_kl(student_logits, teacher_logits, mask, temperature: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """Mean over masked positions of T^2 * KL(teacher_T || student_T); with top_k > 0, over the teacher's top-k
    tokens, both distributions renormalized on them.

    >>> x = torch.randn(1, 3, 10); bool(forward_kl(x, x, torch.ones(1, 3, dtype=torch.bool)).abs() < 1e-6)
    True
    """
    s, t = student_logits.float() / temperature, teacher_logits.float() / temperature
    if top_k:  # both distributions restricted to the teacher's top-k tokens and renormalized there
        t, idx = t.topk(top_k, dim=-1)
        s = s.gather(-1, idx)
    s, t = F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)
    return kl[mask].sum() * temperature**2 / mask.sum().clamp_min(1)


class TopKDistillTrainer(GKDTrainer):
    """GKDTrainer whose loss is `forward_kl` (temperature, top-k); data, on-policy sampling and saving are TRL's."""

    top_k: int = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        self.teacher_model.eval()
        with torch.no_grad():
            teacher = self.teacher_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        mask = inputs["labels"][:, 1:] != -100  # logits at i predict token i + 1
        loss = forward_kl(outputs.logits[:, :-1], teacher.logits[:, :-1], mask, self.temperature, self.top_k)
        return (loss, outputs) if return_outputs else loss


def parse_args(argv: list[str] | None = None) -> tuple[ScriptArgs, DistillArgs, GKDConfig, ModelConfig]:
    return parse(ScriptArgs, DistillArgs, GKDConfig, ModelConfig, argv=argv)


def split_rows(script_args: ScriptArgs, distill_args: DistillArgs, tokenizer, max_length: int):
    """(train, held-out) rows; plain text is tokenized here (GKD's collator only knows `messages`)."""
    rows = load_split(script_args.dataset_name, script_args.dataset_config, script_args.dataset_train_split)
    if "messages" not in rows.column_names:
        if distill_args.text_field not in rows.column_names:
            raise ConfigError(
                f"{script_args.dataset_name}: no `{distill_args.text_field}` or `messages` column (has "
                f"{rows.column_names})"
            )
        rows = rows.map(
            lambda r: {
                "input_ids": tokenizer(r[distill_args.text_field], truncation=True, max_length=max_length)["input_ids"]
            },
            remove_columns=rows.column_names,
        )
    n_eval = min(distill_args.eval_samples, len(rows) // 2)
    return rows.select(range(len(rows) - n_eval)), rows.select(range(len(rows) - n_eval, len(rows)))


@torch.no_grad()
def held_out_eval(trainer, rows) -> dict:
    """KL to the teacher (T = 1, full vocabulary) and both LM losses, token-weighted over the held-out rows."""
    model, teacher = trainer.accelerator.unwrap_model(trainer.model), trainer.teacher_model
    was_training = model.training
    model.eval()
    totals, tokens = {"kl_to_teacher": 0.0, "student_loss": 0.0, "teacher_loss": 0.0}, 0
    for i in range(0, len(rows), 8):
        batch = trainer.data_collator([rows[j] for j in range(i, min(i + 8, len(rows)))])
        batch = {k: v.to(model.device) for k, v in batch.items() if torch.is_tensor(v)}
        s = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels, mask = batch["labels"][:, 1:], batch["labels"][:, 1:] != -100
        n = int(mask.sum())
        totals["kl_to_teacher"] += forward_kl(s, t, mask).item() * n
        for key, logits in (("student_loss", s), ("teacher_loss", t)):
            totals[key] += F.cross_entropy(logits[mask], labels[mask]).item() * n
        tokens += n
    model.train(was_training)
    return {k: v / max(tokens, 1) for k, v in totals.items()}


def build_trainer(script_args, distill_args, training_args: GKDConfig, model_args, output_dir):
    from transformers import AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    if training_args.beta != 0:
        raise ConfigError(f"beta: {training_args.beta}; distill computes the forward KL (beta: 0)")
    if not training_args.teacher_model_name_or_path:
        raise ConfigError("teacher_model_name_or_path is required (the unpruned checkpoint)")
    training_args.output_dir = str(output_dir)
    training_args.model_init_kwargs = model_init_kwargs(training_args, model_args)
    training_args.teacher_model_init_kwargs = {"dtype": model_args.dtype or "auto"}
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    train, held_out = split_rows(script_args, distill_args, tokenizer, training_args.max_length)
    collator = None if "messages" in train.column_names else DataCollatorForLanguageModeling(tokenizer.pad_token_id)
    trainer = TopKDistillTrainer(
        model=model_args.model_name_or_path,
        teacher_model=training_args.teacher_model_name_or_path,
        args=training_args,
        train_dataset=train,
        processing_class=tokenizer,
        data_collator=collator,
        callbacks=[MetricsFile(Path(output_dir) / "metrics.jsonl")],
    )
    trainer.top_k = distill_args.distill_top_k
    prepare_trainer(trainer, script_args)
    return trainer, held_out


def main(argv: list[str] | None = None) -> int:
    script_args, distill_args, training_args, model_args = parse_args(argv)
    inputs = [model_args.model_name_or_path, training_args.teacher_model_name_or_path, script_args.dataset_name]
    art = checkpoint_artifact("distill", script_args, training_args, model_args, inputs)
    if art.up_to_date() and not script_args.force:
        print(art.skip_message())
        return 0
    with checkpoint_writing(art) as tmp:
        trainer, held_out = build_trainer(script_args, distill_args, training_args, model_args, tmp)
        before = held_out_eval(trainer, held_out)
        trainer.train(resume_from_checkpoint=last_checkpoint(tmp))
        after = held_out_eval(trainer, held_out)
        save_checkpoint(trainer, tmp, art, script_args, len(trainer.train_dataset))
        art.extra["distill_eval"] = {"held_out_rows": len(held_out), "before": before, "after": after}
    print(f"[distill] wrote {art.path}: KL to teacher {before['kl_to_teacher']:.4f} -> {after['kl_to_teacher']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
