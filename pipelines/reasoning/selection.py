"""What `select` decides for the samples of one prompt: pure functions on trace rows (dicts), no Ray.

`select_prompt(samples, cfg, tokenizer=None)` returns `(kind, record)` pairs:
  ("prompt", stats)          one per prompt: samples, scored, correct, pass_rate
  ("sft", row)               a sample kept for SFT, as variant full | no_think | budget
  ("sft_rejected", row)      a sample not used for SFT, with its reason
  ("pair", row)              a preference pair: correct_vs_incorrect | shorter_vs_longer
  ("pairs_missing", row)     a prompt (and reasoning mode) that gave no pair, with the reason
  ("rl", row) / ("rl_rejected", row)   the prompt as an RL prompt, or why not
Every sample ends in exactly one of "sft" / "sft_rejected", every prompt in one of "rl" / "rl_rejected".
Lengths and thinking budgets count the tokenizer's tokens when one is given, else whitespace-separated words.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pipelines.reasoning.prompt_formats import split_reasoning, with_reasoning_flag
from pipelines.reasoning.traces import unit

_FLAG = re.compile(r"/no_think|/think")
_WORD = re.compile(r"\s*\S+")


def words(text: str) -> list[str]:
    """Whitespace-separated words with their leading whitespace (joining them gives back the text, trimmed)."""
    return _WORD.findall(text)


def set_reasoning_flag(messages: list[dict[str, str]], mode: str) -> list[dict[str, str]]:
    """Replace the /think or /no_think flag of the system turn (or add one)."""
    if messages and messages[0]["role"] == "system":
        rest = _FLAG.sub("", messages[0]["content"]).strip()
        messages = ([{"role": "system", "content": rest}] if rest else []) + messages[1:]
    return with_reasoning_flag(messages, mode)


def strip_reasoning(sample: dict[str, Any]) -> list[dict[str, str]]:
    """The Nano 2 `/no_think` variant: same answer, empty think block, system flag switched off."""
    *prompt, last = sample["messages"]
    _, answer = split_reasoning(last["content"])
    return [*set_reasoning_flag(prompt, "off"), {"role": "assistant", "content": f"<think></think>{answer}"}]


def tokens(text: str, tokenizer=None) -> list:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if tokenizer else words(text)


def truncate_reasoning(content: str, budget: int, tokenizer=None) -> str:
    """Cut the thinking to its first `budget` tokens, close it and keep the final answer (budget-control data).

    >>> truncate_reasoning("<think>a b c d</think>The answer is 4.", budget=2)
    '<think>\\na b\\n</think>\\n\\nThe answer is 4.'
    """
    reasoning, answer = split_reasoning(content)
    if reasoning is None:
        return content
    head = tokens(reasoning, tokenizer)[:budget]
    cut = tokenizer.decode(head) if tokenizer else "".join(head)
    return f"<think>\n{cut.strip()}\n</think>\n\n{answer}"


def _prompt_messages(sample: dict[str, Any]) -> list[dict[str, str]]:
    messages = sample["messages"]
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


def _assistant(sample: dict[str, Any]) -> list[dict[str, str]]:
    return [sample["messages"][-1]]


def sample_reason(s: dict[str, Any]) -> str | None:
    """Why a sample cannot be an SFT example on its own merits (None: it can)."""
    if s.get("error"):
        return "error"
    if s.get("verified") is None:
        return "no_gold"
    if s.get("truncated"):
        return "truncated"
    if not s["verified"]:
        return "incorrect"
    return None


def reasoning_length(sample: dict[str, Any], tokenizer=None) -> int:
    """Tokens (words without a tokenizer) in the sample's thinking."""
    content = sample["messages"][-1]["content"] if sample["messages"][-1]["role"] == "assistant" else ""
    return len(tokens(split_reasoning(content)[0] or "", tokenizer))


def trace_text(sample: dict[str, Any]) -> str:
    """What decontamination reads of a trace: its prompt and completion (the system turn is only the flag)."""
    return "\n".join(m["content"] or "" for m in sample["messages"] if m["role"] != "system")


def sample_key(sample: dict) -> str:
    """A sample by what it is: its id and a digest of its messages. Two traces artifacts may hold the same id (two
    runs of one prompt set); their completions tell them apart. Not the artifact's path: the same traces copied
    elsewhere (another folder, an s3:// prefix) must select the same variants in the same order."""
    digest = hashlib.blake2b(json.dumps(sample["messages"], sort_keys=True).encode(), digest_size=8).hexdigest()
    return f"{sample['id']}:{digest}"


def decontaminate(
    samples: list[dict[str, Any]], reasons: list[str | None], tokenizer=None
) -> tuple[list[dict[str, Any]], list[tuple[str, dict]]]:
    """Drop samples whose `trace_text` shares an n-gram with an evaluation set (`reasons`: the stage computes them
    with the function curate and synth use, dedup/decontaminate.py); returns the clean samples and the records of
    the dropped ones.

    A dropped sample is `sft_rejected` with reason `contaminated:<name>`. When every sample of a prompt is dropped,
    the prompt is accounted here too (a `prompt` record and an `rl_rejected` one with the first sample's reason).
    """
    clean = [s for s, r in zip(samples, reasons, strict=True) if r is None]
    out = [
        (
            "sft_rejected",
            {
                "id": s["id"],
                "prompt_id": s["prompt_id"],
                "traces": s.get("traces"),
                "reasoning": s["reasoning"],
                "verified": s.get("verified"),
                "length": reasoning_length(s, tokenizer),
                "reason": r,
            },
        )
        for s, r in zip(samples, reasons, strict=True)
        if r
    ]
    if out and not clean:
        first = min(samples, key=sample_key)
        prompt_id, reason = first["prompt_id"], next(r for r in reasons if r)
        out.append(
            ("prompt", {"prompt_id": prompt_id, "samples": len(samples), "scored": 0, "correct": 0, "pass_rate": None})
        )
        user_turns = [m for m in _prompt_messages(first) if m["role"] != "system"]
        out.append(
            (
                "rl_rejected",
                {
                    "prompt_id": prompt_id,
                    "prompt": user_turns,
                    "answer": first.get("answer"),
                    "verifier": first.get("verifier") or "math",
                    "pass_rate": None,
                    "reason": reason,
                },
            )
        )
    return clean, out


def select_prompt(samples: list[dict[str, Any]], cfg, tokenizer=None) -> list[tuple[str, dict]]:
    """All decisions for one prompt's samples (see the module docstring)."""
    samples = sorted(samples, key=sample_key)
    prompt_id, out = samples[0]["prompt_id"], []
    scored = [s for s in samples if not s.get("error") and s.get("verified") is not None]
    correct = [s for s in scored if s["verified"]]
    pass_rate = len(correct) / len(scored) if scored else None
    out.append(
        (
            "prompt",
            {
                "prompt_id": prompt_id,
                "samples": len(samples),
                "scored": len(scored),
                "correct": len(correct),
                "pass_rate": pass_rate,
            },
        )
    )

    # SFT: rejection sampling, then the no_think / budget variants on a deterministic share of the kept samples.
    in_window = pass_rate is not None and cfg.min_pass_rate <= pass_rate <= cfg.max_pass_rate
    seen, kept = set(), 0
    for s in samples:
        content = s["messages"][-1]["content"] if s["messages"][-1]["role"] == "assistant" else ""
        n = reasoning_length(s, tokenizer)
        base = {
            "id": s["id"],
            "prompt_id": prompt_id,
            "traces": s.get("traces"),
            "reasoning": s["reasoning"],
            "verified": s.get("verified"),
            "length": n,
        }
        reason = sample_reason(s)
        if reason is None and not in_window:
            reason = "pass_rate_out_of_window"
        elif reason is None and content in seen:
            reason = "duplicate_completion"
        elif reason is None and cfg.max_sft_per_prompt is not None and kept >= cfg.max_sft_per_prompt:
            reason = "over_per_prompt_cap"
        if reason:
            out.append(("sft_rejected", base | {"reason": reason}))
            continue
        seen.add(content)
        kept += 1
        u = unit(f"variant:{cfg.seed}:{sample_key(s)}")
        budgets, budget = [b for b in cfg.thinking_budgets if b < n], None  # only traces longer than a budget
        if s["reasoning"] == "on" and u < cfg.no_think_ratio:
            variant, messages = "no_think", strip_reasoning(s)
        elif s["reasoning"] == "on" and u < cfg.no_think_ratio + cfg.budget_ratio and budgets:
            budget = budgets[int(unit(f"budget:{s['id']}") * len(budgets))]
            text = truncate_reasoning(content, budget, tokenizer)
            variant, messages = "budget", [*_prompt_messages(s), {"role": "assistant", "content": text}]
        else:
            variant, messages = "full", s["messages"]
        out.append(
            (
                "sft",
                base
                | {"variant": variant, "thinking_budget": budget, "messages": messages, "source": s.get("source")},
            )
        )

    # Preference pairs, within one reasoning mode: correct vs incorrect (shortest correct first), and optionally
    # the shortest vs the longest correct answer.
    for mode in sorted({s["reasoning"] for s in samples}):
        good = sorted((s for s in samples if s["reasoning"] == mode and sample_reason(s) is None), key=_len)
        wrong = ("incorrect", "truncated") if cfg.pair_truncated else ("incorrect",)
        bad = [s for s in samples if s["reasoning"] == mode and sample_reason(s) in wrong and s["verified"] is False]
        pairs = [(c, r, "correct_vs_incorrect") for c, r in zip(good, bad, strict=False)][: cfg.max_pairs_per_prompt]
        if cfg.length_pairs and len(good) >= 2 and _len(good[-1]) >= cfg.min_length_ratio * max(1, _len(good[0])):
            pairs.append((good[0], good[-1], "shorter_vs_longer"))
        for c, r, kind in pairs:
            out.append(
                (
                    "pair",
                    {
                        "prompt_id": prompt_id,
                        "prompt": _prompt_messages(c),
                        "chosen": _assistant(c),
                        "rejected": _assistant(r),
                        "pair_type": kind,
                        "chosen_id": c["id"],
                        "rejected_id": r["id"],
                        "reasoning": mode,
                    },
                )
            )
        if not pairs:
            why = (
                "no_gold"
                if not any(s.get("verified") is not None for s in samples)
                else ("no_correct" if not good else "no_incorrect")
            )
            out.append(("pairs_missing", {"prompt_id": prompt_id, "reasoning": mode, "reason": why}))

    # RL prompts: learnable ones (pass rate strictly inside the window) with their gold answer.
    answer = samples[0].get("answer")
    if answer is None:
        rl_reason = "no_gold"
    elif pass_rate is None:
        rl_reason = "no_scored_samples"
    elif pass_rate <= cfg.rl_min_pass_rate:
        rl_reason = "too_hard"
    elif pass_rate >= cfg.rl_max_pass_rate:
        rl_reason = "too_easy"
    else:
        rl_reason = None
    user_turns = [m for m in _prompt_messages(samples[0]) if m["role"] != "system"]
    record = {
        "prompt_id": prompt_id,
        "prompt": user_turns,
        "answer": answer,
        "verifier": samples[0].get("verifier") or "math",
        "pass_rate": pass_rate,
    }
    out.append(("rl_rejected", record | {"reason": rl_reason}) if rl_reason else ("rl", record))
    return out


def _len(s: dict[str, Any]) -> int:
    return len(s["messages"][-1]["content"])
