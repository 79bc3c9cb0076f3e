"""Markdown tables from a results folder of the GPU benchmarks (runs anywhere, no GPU):

python -m benchmarks.gpu.report /tmp/nfbench/results
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.gpu.common import RESULTS

# --- report ----------------------------------------------------------------------------------------------------------


def report(a) -> None:
    d = Path(a.dir)
    res = {p.stem: json.loads(p.read_text()) for p in sorted(d.glob("*.json"))}
    lines = []
    env = res.get("env", {})
    if env:
        # env runs in phase 0, before the staged wheels are installed: take versions from a result that has vLLM
        vers = next((r["versions"] for r in res.values() if (r.get("versions") or {}).get("vllm")), env["versions"])
        vers = ", ".join(f"{k} {v}" for k, v in vers.items() if v)
        lines += [
            f"Device: {env['gpu']} ({env['nvidia_smi']}); copy {env['copy_bandwidth_Bps'] / 1e12:.2f} TB/s "
            f"(read+write), bf16 matmul {env['bf16_matmul_flops'] / 1e12:.0f} TFLOP/s; {vers}",
            "",
        ]
    lines += ["| benchmark | setting | result |", "|---|---|---|"]
    for r in res.values():  # synth runs name their step's log: when their engine resolved the model, was ready
        log = d.parent / "logs" / Path(str(r.get("log"))).name if isinstance(r, dict) and r.get("log") else None
        if log and log.is_file() and r.get("process_start"):
            t = engine_timeline(log.read_text(errors="replace"), r["process_start"])
            # a later step of the same name rewrites the log (sixteenth lease: "engine ready 248 s" for a 93 s run)
            r["timeline"] = t if 0 <= t.get("engine_ready_s", 0) <= r.get("process_s", float("inf")) else {}
    for name, r in res.items():
        try:
            lines += report_lines(name, r, res)
        except (KeyError, TypeError, ValueError) as e:
            lines.append(f"| {name} | | unreadable result ({e!r}) |")
    print("\n".join(lines))


VLLM_TIME = r"(\d\d-\d\d \d\d:\d\d:\d\d)"  # vLLM's log lines: "INFO 12-03 04:11:39 [model.py:623] ..."


def engine_timeline(log: str, process_start: float) -> dict[str, float]:
    """From a step's log (raw vLLM's, or the stage's with its engine actor's lines): seconds from the process's start
    to the engine resolving the model and to its being ready, its init and graph capture. vLLM stamps its lines to
    the second, in UTC on the lent machines."""
    import datetime as dt
    import re

    year = dt.datetime.fromtimestamp(process_start, dt.UTC).year

    def since_start(stamp: str) -> float:
        t = dt.datetime.strptime(f"{year}-{stamp}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
        return t.timestamp() - process_start

    out = {}
    if m := re.search(VLLM_TIME + r" \[model\.py:\d+\] Resolved architecture", log):
        out["resolved_s"] = since_start(m[1])
    if m := re.search(VLLM_TIME + r" \[core\.py:\d+\] init engine \(profile.*?\) took ([\d.]+) s", log):
        out["engine_ready_s"], out["init_s"] = since_start(m[1]), float(m[2])
    if m := re.search(r"Graph capturing finished in (\d+) secs", log):
        out["graphs_s"] = float(m[1])
    return out


def timeline_text(r: dict) -> str:
    t = r.get("timeline") or {}
    if "engine_ready_s" not in t:
        return ""
    text = f"; from process start: model resolved {t.get('resolved_s', float('nan')):.0f} s, engine ready "
    text += f"{t['engine_ready_s']:.0f} s (init {t['init_s']:.0f} s" + (
        f", graphs {t['graphs_s']:.0f} s)" if "graphs_s" in t else ")"
    )
    return text


def host_text(r: dict) -> str:
    """The machine's CPUs over a run (`common.HostLoad`): `; host: 2.1 cores busy, steal 0.0%`."""
    h = r.get("host") or {}
    if h.get("cores_busy") is None:
        return ""
    return f"; host: {h['cores_busy']:.1f} cores busy, steal {h['steal']:.1%}"


def cell(text: object, limit: int = 300) -> str:
    """One table cell: no ANSI colours (Ray's errors carry them), newlines or pipes."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(text or ""))
    return " ".join(text.replace("|", "/").split())[:limit]


def slowed_by(threads: list[dict]) -> str:
    """What held back the busiest thread (a sidecar's ThreadWatch row): ` (runnable but waiting 3%, ...)`."""
    t = threads[0] if threads else {}
    if "runqueue_wait" not in t:  # a sidecar from before the sixteenth lease
        return ""
    waited = "?" if t["runqueue_wait"] is None else f"{t['runqueue_wait']:.0%}"  # no schedstat on that kernel
    parts = [f"runnable but waiting {waited}", f"{t['involuntary_per_s']:.0f} preemptions/s"]
    parts.append("on CPU " + ", ".join(f"{c} {v:.0%}" for c, v in t["cpus"].items()))
    for key, label in (("sibling_busy", "SMT sibling busy"), ("steal", "steal")):
        if t.get(key) is not None:
            parts.append(f"{label} {t[key]:.0%}")
    if t.get("mhz"):
        parts.append(f"{t['mhz']:,.0f} MHz")
    return f" ({'; '.join(parts)})"


def report_lines(name: str, r: dict, res: dict | None = None) -> list[str]:
    lines = []
    if name in ("env", "build"):
        return lines
    if name.startswith("window"):  # benchmarks/gpu/windows.py: decode windows, then projected workloads
        head = f"{r.get('requests')} at once (vLLM's room: {r.get('vllm_max_concurrency')})"
        for ctx, w in r.get("windows", {}).items():
            val = f"step {w['step_s_mean'] * 1e3:.1f} ms, {w['decode_tokens_per_s'] or 0:,.0f} tok/s decode"
            span = f"{w['tokens_per_step_min']}-{w['tokens_per_step_max']}"
            val += f", prefill {w['prefill_s']:.1f} s, tokens/step {span}"
            lines.append(f"| {name} | {head}, context {ctx} | {val} |")
        for p in r.get("projections", []):
            rl = p.get("roofline_tokens_per_s")
            val = f"{p['tokens_per_s']:,.0f} tok/s projected ({p['seconds']:.0f} s)"
            val += f" (roofline {rl:,.0f}, {p['tokens_per_s'] / rl:.0%})" if rl else ""
            lines.append(f"| {name} | {p['prompt']} in x {p['gen']} out | {val} |")
        return lines
    if name.startswith("sidecar"):  # benchmarks/gpu/sidecar.py: a run's engine processes, sampled beside it
        if r.get("error"):
            return [f"| {name} | | {cell(r['error'])} |"]
        gpu = r.get("gpu_utilization") or {}
        if gpu.get("mean") is not None:
            lines.append(
                f"| {name} | GPU, {r['seconds']:.0f} s from {r['after_s']:.0f} s after the engine appeared |"
                f" utilization {gpu['mean']:.0f}% mean, {gpu['min']}% min ({gpu['samples']} samples) |"
            )
        if iso := r.get("isolated"):  # sidecar --isolate: the engine's busy thread given a core of its own
            text = iso.get("error") or (
                f"thread {iso['name']} ({iso['tid']}) alone on CPU {iso['cpu']} (kept free: "
                f"{', '.join(map(str, iso['reserved']))}); {iso['moved']} threads moved off, "
                f"{iso.get('restored')} put back"
            )
            lines.append(f"| {name} | isolated | {cell(text)} |")
        for role in ("engine", "frontend"):
            p = r[role]
            busy = ", ".join(f"{t['name']} {t['cpu']:.0%}" for t in p["busiest_threads"][:4])
            env = ", ".join(f"{k}={v}" for k, v in p["env"].items() if v is not None and "VISIBLE" not in k)
            text = f"threads: {busy}{slowed_by(p['busiest_threads'])}; CPUs {p['cpus_allowed']}"
            text += f"; {env or 'no thread settings'}" + (f"; ended {p['ended_s']} s in" if "ended_s" in p else "")
            st = p.get("stacks") or {}
            if st.get("samples"):
                own = "; ".join(f"{n} {v:.0%}" for n, v in st["own"][:6])
                text += f"; py-spy {st['samples']} samples, own time: {own}"
            elif st.get("error"):
                text += f"; py-spy: {st['error'][:120]}"
            lines.append(f"| {name} | {role} (pid {p['pid']}) | {cell(text, 700)} |")
        return lines
    if name.startswith("startup"):  # benchmarks/gpu/startup.py: each pass in a fresh process, the last one warm
        for i, run in enumerate(r.get("imports", [])):
            steps = [
                f"{s['step']} {s['s']:.1f} s"
                + (" (vLLM loaded)" if s["vllm_loaded"] else "")
                + (" failed" if s["error"] else "")
                for s in run.get("result", [])
            ]
            lines.append(f"| {name} | driver imports, pass {i + 1} | {cell('; '.join(steps) or run.get('error'))} |")
        for i, run in enumerate(r.get("actor", [])):
            ready = "; ".join(
                f"{k}: ready {v['ready_s']:.1f} s (__init__ {v.get('init_s', 0):.1f} s)"
                for k, v in (run.get("result") or {}).items()
            )
            lines.append(
                f"| {name} | actor with its own runtime env, pass {i + 1} | {cell(ready or run.get('error'))} |"
            )
        for i, run in enumerate(r.get("import_times", [])):  # startup.py --build: the background imports alone
            top = "; ".join(t.strip() for t in run["top"][:6])
            vllm = "vLLM imported" if run["vllm_imported"] else "vLLM not imported"
            text = f"{run['s']:.1f} s in a fresh process ({vllm}); most cumulative: {top}"
            lines.append(f"| {name} | the driver's background imports, pass {i + 1} | {cell(text, 600)} |")
        for i, run in enumerate(r.get("build", [])):  # startup.py --build: synth's driver building the vLLM stage
            b = run.get("result") or {}
            built = (
                f"Ray ready {b['ray_ready_s']:.1f} s, imports joined {b['imports_joined_s']:.1f} s, stages built in "
                f"{b['build_s']:.1f} s" + (" (vLLM loaded)" if b["vllm_loaded"] else " (vLLM not loaded)")
                if b
                else run.get("error")
            )
            lines.append(f"| {name} | the driver's build, pass {i + 1} | {cell(built)} |")
        return lines
    if name.startswith(("vllm", "hf_gen", "synth_raw")):
        start = r.get("engine_start_s")
        for run in r.get("runs", []):
            rl = run.get("roofline", {}).get("tokens_per_s")
            setting = ", ".join(f"{k}={run[k]}" for k in ("n", "batch", "prompt_len", "gen_len", "seeded") if k in run)
            val = f"{run['tokens_per_s']:,.0f} tok/s" if "tokens_per_s" in run else cell(run.get("error", "?"))
            val += f" (roofline {rl:,.0f}, {run['tokens_per_s'] / rl:.0%})" if rl and "tokens_per_s" in run else ""
            start_text = f"; engine start {start:.0f} s" if start else ""
            lines.append(f"| {name} | {setting} | {val}{start_text}{timeline_text(r)}{host_text(run)} |")
        if not r.get("runs"):  # stopped before its first run: how far it got
            got = f"; engine started in {start:.0f} s, stopped before the first run ended" if start else ""
            lines.append(f"| {name} | | {r.get('status')}{got} {cell(r.get('error', ''), 200)} |")
    elif name.startswith("synth"):
        if r.get("status") == "ok":
            paired = name.replace("synth-", "synth_raw-", 1).removesuffix("-attached")  # raw has no Ray to join
            raw = (res or {}).get(paired.removesuffix(f"-bs{r['batch_size']}"), {})
            raw = raw or (res or {}).get(f"synth_raw-{r['model']}", {})
            ratio = ""
            if raw.get("process_s") and r.get("process_s"):  # both from process start; raw is seeded like the stage
                ratio = (
                    f"; from process start raw vLLM {raw['process_s']:.0f} s, stage {r['process_s']:.0f} s: "
                    f"stage at {raw['process_s'] / r['process_s']:.2f}x raw's speed"
                )
            elif raw.get("wall_incl_start_s"):  # older results: raw's clock leaves out its imports
                ratio = (
                    f"; raw vLLM {raw['wall_incl_start_s']:.0f} s incl. engine start (not its imports), stage / raw "
                    f"{r['wall_s'] / raw['wall_incl_start_s']:.2f}x time"
                )
            ready = (r.get("timeline") or {}).get("engine_ready_s")
            generating = f", then ~{r['process_s'] - ready:.0f} s generating" if ready and r.get("process_s") else ""
            lines.append(
                f"| {name} | batch_size={r['batch_size']} | {r['gen_tokens']:,} tokens in {r['wall_s']:.0f} s wall"
                f" ({r['gen_tokens'] / r['wall_s']:,.0f} tok/s){ratio}{timeline_text(r)}{generating}{host_text(r)} |"
            )
        elif r.get("status") == "cut off":  # the step's time limit stopped it (bench_synth's SIGTERM handler)
            lines.append(
                f"| {name} | batch_size={r['batch_size']} | cut off at its step limit, {r['process_s']:.0f} s from "
                f"process start: {r['written']:,} of {r['planned']:,} samples written{timeline_text(r)} |"
            )
        else:
            lines.append(f"| {name} | | {r.get('status')}: {cell(r.get('error', ''))} |")
    elif name.startswith("sft"):
        if r.get("status") == "ok":
            mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "n/a"
            mem = f"{r['max_mem_GiB']:.0f} GiB" if r.get("max_mem_GiB") else ""
            lines.append(
                f"| {name} | {r['param_dtype']}, padding_free={r['padding_free']} | {r['tokens_per_s']:,.0f} tok/s, "
                f"MFU {mfu}, padding waste {r['padding_waste']:.0%}, {mem} |"
            )
        else:
            lines.append(f"| {name} | | {r.get('status')}: {cell(r.get('error', ''))} |")
    elif name.startswith("grpo"):
        if r.get("status") == "ok":
            m = r["mean_step"]
            lines.append(
                f"| {name} | | step {m['total']:.2f} s = generate {m['generate']:.2f} + score {m['score']:.3f} "
                f"+ logprobs {m['other_prep']:.2f} + train {m['train']:.2f} |"
            )
        else:
            lines.append(f"| {name} | | {r.get('status')}: {cell(r.get('error', ''))} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("dir", nargs="?", default=str(RESULTS))
    report(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
