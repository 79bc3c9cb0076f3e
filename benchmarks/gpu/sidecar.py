"""What a running vLLM engine's processes do, sampled from beside them (issue 16: on the fifteenth lease the synth
stage's 1B hybrid generated at ~0.8x raw vLLM's rate on the same engine settings, V2 runner, 1,024 sequences; the
dense model's stage had kept pace with raw). Started next to a run, it waits for vLLM's EngineCore process, lets the
run reach its steady state, then for `--seconds` at once:

- each thread's CPU use in the EngineCore and in its parent (vLLM's frontend: raw's own process, or the stage's Ray
  actor), from /proc, with the settings that bound them (OMP_NUM_THREADS and friends, the CPUs each may run on);
- where their Python threads spend the time, by `py-spy record --nonblocking` where py-spy is found (`py_spy`):
  the costliest functions of each, by their own samples and with their callees;
- the GPU's utilisation, from nvidia-smi every 200 ms.

    python -m benchmarks.gpu.sidecar --label sidecar-stage --after 40 --seconds 20   # <work>/results/<label>.json
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.gpu.common import save

ENV_KEYS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "VLLM_USE_V2_MODEL_RUNNER")
PY_SPY = ("py-spy", "/root/carry/py-spy")


def find_engine(pattern: str = "EngineCore", timeout: float = 600, log: str | None = None) -> int | None:
    """The pid of the first process whose command line or name holds `pattern` (vLLM titles its engine process
    `VLLM::EngineCore` where setproctitle is installed), or that `log` names as `(EngineCore pid=N)` (vLLM prefixes
    the engine process's lines so), waiting up to `timeout` seconds for it to appear."""
    me, end = os.getpid(), time.monotonic() + timeout
    while time.monotonic() < end:
        named = (
            re.search(rf"\({re.escape(pattern)}\S* pid=(\d+)\)", Path(log).read_text(errors="replace"))
            if log and Path(log).is_file()
            else None
        )
        if named and Path(f"/proc/{named[1]}").exists():
            return int(named[1])
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == me:
                continue
            try:
                text = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                text += " " + (proc / "comm").read_text()
            except OSError:  # gone meanwhile
                continue
            if pattern in text and "benchmarks.gpu.sidecar" not in text:
                return int(proc.name)
        time.sleep(0.5)
    return None


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def settings(pid: int) -> dict:
    env = dict(
        kv.split("=", 1)
        for kv in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
        if "=" in kv
    )
    st = status(pid)
    return {
        "pid": pid,
        "cmdline": Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:300],
        "env": {k: env.get(k) for k in ENV_KEYS},
        "cpus_allowed": st.get("Cpus_allowed_list", "").strip(),
        "threads": int(st.get("Threads", 0)),
    }


def thread_ticks(pid: int) -> dict[int, tuple[str, int]]:
    """tid -> (thread name, user + system clock ticks so far)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = ((task / "comm").read_text().strip(), int(fields[11]) + int(fields[12]))
        except (OSError, IndexError, ValueError):
            continue
    return out


def busiest_threads(before: dict, after: dict, seconds: float, top: int = 8) -> list[dict]:
    hz = os.sysconf("SC_CLK_TCK")
    rows = [
        {"tid": tid, "name": name, "cpu": (ticks - before.get(tid, (name, 0))[1]) / hz / seconds}
        for tid, (name, ticks) in after.items()
    ]
    return sorted(rows, key=lambda r: -r["cpu"])[:top]


def py_spy() -> str | None:
    """py-spy on PATH, beside this Python (a virtual environment's bin), or carried to the lent machine."""
    beside = str(Path(sys.executable).parent / PY_SPY[0])
    return next((p for p in (shutil.which(PY_SPY[0]), beside, PY_SPY[1]) if p and os.access(p, os.X_OK)), None)


FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """`step (vllm/v1/engine/core.py:345)` -> `step (core.py)`: one name per function, whatever line it was at."""
    m = FRAME.match(frame.strip())
    return f"{m['func']} ({Path(m['file']).name})" if m else frame.strip()


def summarize_stacks(raw: str, top: int = 15) -> dict:
    """py-spy's raw (collapsed) output, one `frame;frame;...;leaf count` line per distinct stack, first frame the
    thread under --threads: samples per thread, and the functions that cost most, by their own samples and with
    their callees (each function once per stack)."""
    own, total, threads = collections.Counter(), collections.Counter(), collections.Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if frames[0].startswith("process "):
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            threads[frames[0]] += n
            frames = frames[1:]
        names = [frame_name(f) for f in frames]
        samples += n
        if names:
            own[names[-1]] += n
        for name in set(names):
            total[name] += n
    share = lambda c: [[name, round(v / samples, 3)] for name, v in c.most_common(top)] if samples else []  # noqa: E731
    return {"samples": samples, "threads": share(threads), "own": share(own), "total": share(total)}


def record_stacks(pid: int, seconds: float, out: Path, binary: str | None) -> dict:
    if not binary:
        return {"error": "py-spy not found (PATH, beside this Python, /root/carry/py-spy)"}
    cmd = [binary, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100", "--threads"]
    cmd += ["--nonblocking", "--format", "raw", "--output", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode or not out.is_file():
        return {"error": (proc.stderr or proc.stdout)[-600:], "rc": proc.returncode}
    return summarize_stacks(out.read_text(errors="replace"))


def gpu_utilization(seconds: float) -> dict | None:
    if not shutil.which("nvidia-smi"):
        return None
    cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "200"]
    try:
        text = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds).stdout
    except subprocess.TimeoutExpired as e:  # -lms runs until stopped: its output so far is the sample
        text = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    values = [int(v) for v in text.split() if v.strip().isdigit()]
    return {
        "samples": len(values),
        "mean": sum(values) / len(values) if values else None,
        "min": min(values, default=None),
    }


def sample(
    label: str, after: float, seconds: float, pattern: str = "EngineCore", wait: float = 600, log: str | None = None
) -> dict:
    t0 = time.monotonic()
    engine = find_engine(pattern, wait, log)
    if engine is None:
        return {"label": label, "error": f"no process matching {pattern!r} within {wait:.0f} s"}
    found = time.monotonic() - t0
    time.sleep(after)
    frontend = int(status(engine)["PPid"])
    procs = {"engine": engine, "frontend": frontend}
    result = {"label": label, "engine_found_s": round(found, 1), "after_s": after, "seconds": seconds}
    result |= {role: settings(pid) for role, pid in procs.items()}
    binary, work = py_spy(), Path(os.environ.get("NF_WORK", "/tmp/nfbench")) / "logs"
    work.mkdir(parents=True, exist_ok=True)
    stacks, threads = {}, []
    for role, pid in procs.items():
        out = work / f"{label}-{role}.stacks.txt"
        threads.append(
            threading.Thread(
                target=lambda r=role, p=pid, o=out: stacks.update({r: record_stacks(p, seconds, o, binary)})
            )
        )
    before = {role: thread_ticks(pid) for role, pid in procs.items()}
    t = time.monotonic()
    for th in threads:
        th.start()
    gpu = gpu_utilization(seconds)
    if gpu is None:
        time.sleep(max(0.0, seconds - (time.monotonic() - t)))
    cpu_window = time.monotonic() - t
    for role, pid in procs.items():
        result[role]["busiest_threads"] = busiest_threads(before[role], thread_ticks(pid), cpu_window)
    for th in threads:
        th.join()
    for role in procs:
        result[role]["stacks"] = stacks.get(role)
    result["gpu_utilization"] = gpu
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", required=True, help="results/<label>.json")
    ap.add_argument("--after", type=float, default=40, help="seconds after the engine process appears")
    ap.add_argument("--seconds", type=float, default=20, help="how long to sample")
    ap.add_argument("--pattern", default="EngineCore", help="what the engine process's command line or name holds")
    ap.add_argument("--wait", type=float, default=600, help="seconds to wait for the engine process")
    ap.add_argument("--log", help="a log where vLLM names the engine process: `(EngineCore pid=N)`")
    a = ap.parse_args(argv)
    save(a.label, sample(a.label, a.after, a.seconds, a.pattern, a.wait, a.log))


if __name__ == "__main__":
    main()
