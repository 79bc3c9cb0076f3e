"""What a running vLLM engine's processes do, sampled from beside them (issue 16: on the fifteenth lease the synth
stage's 1B hybrid generated at ~0.8x raw vLLM's rate on the same engine settings, V2 runner, 1,024 sequences; the
dense model's stage had kept pace with raw). Started next to a run, it waits for vLLM's EngineCore process, lets the
run reach its steady state, then for `--seconds` at once:

- each thread's CPU use in the EngineCore and in its parent (vLLM's frontend: raw's own process, or the stage's Ray
  actor), from /proc, with the settings that bound them (OMP_NUM_THREADS and friends, the CPUs each may run on), and
  what slowed it: time runnable but waiting for a CPU (schedstat), involuntary switches, the CPUs it ran on, how
  busy their SMT siblings were, the hypervisor's steal on them and their clock (sixteenth lease: the stage's engine
  generated at 37k tok/s on one machine and 18k on the next, with the same settings; raw's at 22-25k on both);
- where their Python threads spend the time, by `py-spy record --nonblocking` where py-spy is found (`py_spy`):
  the costliest functions of each, by their own samples and with their callees;
- the GPU's utilisation, from nvidia-smi every 200 ms.

    python -m benchmarks.gpu.sidecar --label sidecar-stage --after 40 --seconds 20   # <work>/results/<label>.json

`--isolate` also gives the engine's busiest thread a CPU of its own from when it appears until it ends (every other
thread on the machine kept off that core and its SMT siblings, then put back): the A/B for a loop slowed by a
shared core.

Length (~445 lines): one tool run beside one engine; its /proc readings, the thread watch, py-spy's summary and the
isolation read the same processes' threads, and the lease copies it as one file.
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
from collections.abc import Callable
from pathlib import Path

from benchmarks.gpu.common import cpu_times, save

ENV_KEYS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "VLLM_USE_V2_MODEL_RUNNER", "LD_PRELOAD")
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


def alive(pid: int) -> bool:
    """Running still: neither gone nor a zombie waiting for its parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


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


def thread_stats(pid: int) -> dict[int, dict]:
    """tid -> the thread's name, CPU clock ticks (user + system), nanoseconds run and runnable-but-waiting
    (/proc/.../schedstat), involuntary context switches, and the CPU it last ran on. Threads gone meanwhile are left
    out; a process gone has none."""
    out = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return {}
    for task in tasks:
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            switches = (task / "status").read_text().split("nonvoluntary_ctxt_switches:")[1].split()[0]
            out[int(task.name)] = {
                "name": (task / "comm").read_text().strip(),
                "ticks": int(fields[11]) + int(fields[12]),
                "involuntary": int(switches),
                "cpu": int(fields[36]),
            }
        except (OSError, IndexError, ValueError):
            continue
        try:  # a kernel without CONFIG_SCHED_INFO has no schedstat: the rest still counts
            run_ns, wait_ns = (int(v) for v in (task / "schedstat").read_text().split()[:2])
            out[int(task.name)] |= {"run_ns": run_ns, "wait_ns": wait_ns}
        except (OSError, ValueError):
            pass
    return out


def cpu_mhz() -> dict[int, float]:
    """cpu -> its clock now, from /proc/cpuinfo (x86; other machines have no `cpu MHz` lines: empty)."""
    out, cpu = {}, None
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "processor":
            cpu = int(value)
        elif key.strip() == "cpu MHz" and cpu is not None:
            out[cpu] = float(value)
    return out


def smt_siblings() -> dict[int, list[int]]:
    """cpu -> the other hardware threads of its core (empty without SMT, or where sysfs does not say)."""
    out = {}
    for topo in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology/thread_siblings_list"):
        cpu = int(topo.parent.parent.name[3:])
        listed = set()
        for part in topo.read_text().strip().split(","):
            lo, _, hi = part.partition("-")
            listed.update(range(int(lo), int(hi or lo) + 1))
        out[cpu] = sorted(listed - {cpu})
    return out


def isolate(pid: int, settle: float = 0.5) -> tuple[dict, Callable[[], int]]:
    """Give the busiest thread of process `pid` (over `settle` seconds) a CPU of its own: it runs only there, and
    every other thread on the machine anywhere but there and on that CPU's SMT siblings. For telling whether a
    CPU-bound engine loop is slowed by what shares its core; a benchmark machine's tool, not the stages'. Returns
    what it did and a function that puts every moved thread's CPUs back as they were (threads gone meanwhile are
    skipped)."""
    before = thread_stats(pid)
    time.sleep(settle)
    after = thread_stats(pid)
    if not after:
        return {"error": f"pid {pid} ended before it could be isolated"}, lambda: 0
    tid = max(after, key=lambda t: after[t]["ticks"] - before.get(t, {"ticks": 0})["ticks"])
    cpu = after[tid]["cpu"]
    reserved = {cpu, *smt_siblings().get(cpu, [])}
    others = set(cpu_times()) - reserved
    moved: dict[int, set[int]] = {}
    seen = set()
    for task in Path("/proc").glob("[0-9]*/task/[0-9]*"):
        t = int(task.name)
        seen.add(t)
        try:
            was = os.sched_getaffinity(t)
            now = {cpu} if t == tid else (was - reserved or others)
            if now != was:
                os.sched_setaffinity(t, now)
                moved[t] = was
        except OSError:  # gone, or a kernel thread that may not move
            continue

    def restore() -> int:
        """Each moved thread's CPUs as they were; a thread or process started meanwhile by a moved one inherited the
        narrowed CPUs, and gets those of its process, or of the nearest ancestor that was there, if that was moved."""
        back = 0
        for task in Path("/proc").glob("[0-9]*/task/[0-9]*"):
            t, proc = int(task.name), int(task.parent.parent.name)
            try:
                was, ancestor = moved.get(t), proc
                while t not in seen and ancestor not in seen and ancestor > 1:  # started meanwhile: up to one that
                    ancestor = int(status(ancestor)["PPid"])  # was there, whose old CPUs it inherited (if moved)
                if t not in seen:
                    was = moved.get(ancestor)
                if was is not None and os.sched_getaffinity(t) != was:
                    os.sched_setaffinity(t, was)
                    back += 1
            except (OSError, KeyError, ValueError):
                continue
        return back

    done = {"tid": tid, "name": after[tid]["name"], "cpu": cpu, "reserved": sorted(reserved), "moved": len(moved)}
    return done, restore


class ThreadWatch:
    """The threads of some processes followed through a window, sample by sample: what each used and what slowed it.
    A process that ends inside the window keeps what was seen of it until then (`ended_s`)."""

    def __init__(self, procs: dict[str, int]):
        self.procs, self.siblings = procs, smt_siblings()
        self.first: dict[str, tuple[float, dict]] = {}  # role -> (when, its threads) at its first and last sample
        self.last: dict[str, tuple[float, dict]] = {}
        self.ended: dict[str, float] = {}
        self.where: dict[str, dict[int, collections.Counter]] = {role: {} for role in procs}
        self.context: dict[str, dict[int, collections.defaultdict]] = {role: {} for role in procs}
        self.t0, self.cpus = time.monotonic(), cpu_times()
        self.sample()

    def sample(self) -> bool:
        """One sample of every process still running; False once none is."""
        now, cpus, mhz = time.monotonic(), cpu_times(), cpu_mhz()
        share = {
            c: [
                (b - self.cpus[c][0]) / max(1, t - self.cpus[c][2]),
                (st - self.cpus[c][1]) / max(1, t - self.cpus[c][2]),
            ]
            for c, (b, st, t) in cpus.items()
            if c in self.cpus
        }
        for role, pid in self.procs.items():
            if role in self.ended:
                continue
            threads = thread_stats(pid) if alive(pid) else {}
            if not threads or not alive(pid):  # gone, or a zombie, while we read it
                self.ended[role] = round(now - self.t0, 1)
                continue
            self.first.setdefault(role, (now, threads))
            self.last[role] = (now, threads)
            for tid, t in threads.items():
                self.where[role].setdefault(tid, collections.Counter())[t["cpu"]] += 1
                ctx = self.context[role].setdefault(tid, collections.defaultdict(list))
                siblings = [share[s][0] for s in self.siblings.get(t["cpu"], []) if s in share]
                if siblings:
                    ctx["sibling_busy"].append(max(siblings))
                if t["cpu"] in share:
                    ctx["steal"].append(share[t["cpu"]][1])
                if t["cpu"] in mhz:
                    ctx["mhz"].append(mhz[t["cpu"]])
        self.cpus = cpus
        return len(self.ended) < len(self.procs)

    def seconds(self, role: str) -> float:
        """How long `role` was watched: first to last sample."""
        return self.last[role][0] - self.first[role][0] if role in self.last else 0.0

    def busiest(self, role: str, top: int = 8) -> list[dict]:
        """The threads that used most CPU over the window, each with what slowed it (shares of the window)."""
        first, last = self.first.get(role, (0, {}))[1], self.last.get(role, (0, {}))[1]
        seconds = max(1e-9, self.seconds(role))
        hz, mean = os.sysconf("SC_CLK_TCK"), lambda v: round(sum(v) / len(v), 3) if v else None  # noqa: E731
        rows = []
        for tid, t in last.items():
            f = first.get(tid, {"ticks": 0, "wait_ns": 0, "involuntary": 0})
            waited = t["wait_ns"] - f.get("wait_ns", 0) if "wait_ns" in t else None
            seen = self.where[role].get(tid, collections.Counter())
            ctx = self.context[role].get(tid, {})
            rows.append(
                {
                    "tid": tid,
                    "name": t["name"],
                    "cpu": (t["ticks"] - f["ticks"]) / hz / seconds,
                    "runqueue_wait": None if waited is None else round(waited / 1e9 / seconds, 3),
                    "involuntary_per_s": round((t["involuntary"] - f["involuntary"]) / seconds, 1),
                    "cpus": {c: round(n / sum(seen.values()), 2) for c, n in seen.most_common(4)},
                    "sibling_busy": mean(ctx.get("sibling_busy", [])),
                    "steal": mean(ctx.get("steal", [])),
                    "mhz": mean(ctx.get("mhz", [])),
                }
            )
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
    label: str,
    after: float,
    seconds: float,
    pattern: str = "EngineCore",
    wait: float = 600,
    log: str | None = None,
    isolated: bool = False,
) -> dict:
    """`isolated`: give the engine's busiest thread a CPU of its own (`isolate`) as soon as it appears, until the
    engine ends (or `wait` seconds after the window)."""
    t0 = time.monotonic()
    engine = find_engine(pattern, wait, log)
    if engine is None:
        return {"label": label, "error": f"no process matching {pattern!r} within {wait:.0f} s"}
    found = time.monotonic() - t0
    if not isolated:
        time.sleep(after)
        return watch_engine(label, engine, found, after, seconds)
    done, restore = isolate(engine)
    try:
        time.sleep(max(0.0, after - (time.monotonic() - t0 - found)))
        result = watch_engine(label, engine, found, after, seconds)
        end = time.monotonic() + wait
        while alive(engine) and time.monotonic() < end:
            time.sleep(1)
    finally:
        done["restored"] = restore()
    return result | {"isolated": done}


def watch_engine(label: str, engine: int, found: float, after: float, seconds: float) -> dict:
    result = {"label": label, "engine_found_s": round(found, 1), "after_s": after, "seconds": seconds}
    try:
        if not alive(engine):
            raise ProcessLookupError(engine)
        procs = {"engine": engine, "frontend": int(status(engine)["PPid"])}
        result |= {role: settings(pid) for role, pid in procs.items()}
    except OSError:  # the run was shorter than `after`
        return result | {"error": f"the engine (pid {engine}) ended within {after:.0f} s of appearing"}
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
    watch = ThreadWatch(procs)
    for th in threads:
        th.start()
    gpu: dict = {}
    probe = threading.Thread(target=lambda: gpu.update(gpu_utilization(seconds) or {}))
    probe.start()
    while time.monotonic() - watch.t0 < seconds and watch.sample():
        time.sleep(0.5)
    watch.sample()
    for role in procs:
        result[role]["busiest_threads"] = watch.busiest(role)
        if role in watch.ended:
            result[role]["ended_s"] = watch.ended[role]
        result[role]["watched_s"] = round(watch.seconds(role), 1)
    probe.join()
    for th in threads:
        th.join()
    for role in procs:
        result[role]["stacks"] = stacks.get(role)
    result["gpu_utilization"] = gpu or None
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", required=True, help="results/<label>.json")
    ap.add_argument("--after", type=float, default=40, help="seconds after the engine process appears")
    ap.add_argument("--seconds", type=float, default=20, help="how long to sample")
    ap.add_argument("--pattern", default="EngineCore", help="what the engine process's command line or name holds")
    ap.add_argument("--wait", type=float, default=600, help="seconds to wait for the engine process")
    ap.add_argument("--log", help="a log where vLLM names the engine process: `(EngineCore pid=N)`")
    ap.add_argument(
        "--isolate",
        action="store_true",
        help="give the engine's busiest thread a CPU (and SMT siblings) of its own, every other thread on the "
        "machine kept off them, from when it appears until it ends; then put them back",
    )
    a = ap.parse_args(argv)
    save(a.label, sample(a.label, a.after, a.seconds, a.pattern, a.wait, a.log, isolated=a.isolate))


if __name__ == "__main__":
    main()
