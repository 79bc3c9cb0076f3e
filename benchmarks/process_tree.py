"""Run a benchmark's system as a subprocess and measure its whole process tree (Ray's raylet and workers count)."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def measure(cmd: list[str], env: dict, cwd: Path = REPO) -> dict:
    """Wall seconds, CPU seconds and peak RSS (bytes) of the process tree, the peak RSS of its largest single
    process (`proc_rss`: a worker's memory, or Ray's raylet/GCS when they are larger), and the return code.

    CPU seconds are each process's own user + system time at its last sample (every 0.2 s), summed: a process that
    lives less than 0.2 s, and the last 0.2 s of each, are missed (a slight undercount, never a double count)."""
    import psutil

    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env)
    peak, cpu, proc_peak, done = 0, {}, {}, threading.Event()

    def sample():
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                rss = 0
                for p in procs:
                    with p.oneshot():
                        p_rss = p.memory_info().rss
                        rss += p_rss
                        proc_peak[p.pid] = max(proc_peak.get(p.pid, 0), p_rss)
                        t = p.cpu_times()
                        # a process's own time only: children_* holds the reaped children that this loop also
                        # sampled while they ran (counting both counted them twice)
                        cpu[p.pid] = t.user + t.system
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    code = proc.wait()
    done.set()
    thread.join()
    seconds, proc_rss = time.monotonic() - start, max(proc_peak.values(), default=0)
    return {"seconds": seconds, "cpu": sum(cpu.values()), "rss": peak, "proc_rss": proc_rss, "code": code}
