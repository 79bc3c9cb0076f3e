"""The GPU benchmarks' sidecar (benchmarks/gpu/sidecar.py) against a real process standing in for vLLM's EngineCore:
it must find the process and its parent, see which thread burns the CPU, and (py-spy) in which function; see a thread
held back by another on its CPU, and give it a CPU of its own; and keep what it saw of an engine that ends inside its
window."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading

import pytest

from benchmarks.gpu import report, sidecar

pytestmark = pytest.mark.timeout(120)

SPINNER = """
import os, sys, threading, time
if len(sys.argv) > 2:
    os.sched_setaffinity(0, {int(sys.argv[2])})
def spin_forever():
    x = 0
    while True:
        x += 1
threading.Thread(target=spin_forever, daemon=True).start()
time.sleep(float(os.environ.get("STANDIN_SECONDS", "90")))
"""


@contextlib.contextmanager
def standins(*names: str, seconds: float = 90, cpu: int | None = None):
    """Spinner processes named `names` (the sidecar finds the engine by name), living `seconds`, pinned to `cpu`."""
    env = os.environ | {"STANDIN_SECONDS": str(seconds)}
    pinned = [str(cpu)] if cpu is not None else []
    procs = [subprocess.Popen([sys.executable, "-c", SPINNER, name, *pinned], env=env) for name in names]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.fixture
def standin():
    env = os.environ | {"OMP_NUM_THREADS": "3"}  # read back from its /proc environ
    proc = subprocess.Popen([sys.executable, "-c", SPINNER, "EngineCore-standin"], env=env)
    yield proc
    proc.kill()
    proc.wait()


def test_the_sidecar_finds_the_engine_its_parent_and_the_thread_that_spins(standin, tmp_path, monkeypatch):
    monkeypatch.setenv("NF_WORK", str(tmp_path))
    r = sidecar.sample("t", after=0.5, seconds=2, pattern="EngineCore-standin", wait=20)
    assert r["engine"]["pid"] == standin.pid and r["frontend"]["pid"] == os.getpid()
    assert r["engine"]["env"]["OMP_NUM_THREADS"] == "3"
    assert r["engine"]["threads"] == 2 and r["engine"]["cpus_allowed"]
    spinning, idle = r["engine"]["busiest_threads"]
    assert spinning["cpu"] > 0.5 and idle["cpu"] < 0.2  # one core's worth in the spinner, the sleeper at rest
    stacks = r["engine"]["stacks"]
    if "not permitted" in stacks.get("error", ""):  # a container without ptrace: the dev install has py-spy
        pytest.skip(f"py-spy may not attach here: {stacks['error'][:200]}")
    assert stacks["samples"] > 50
    assert stacks["own"][0][0].startswith("spin_forever") and stacks["own"][0][1] > 0.8
    engine_row = report.report_lines("sidecar-t", r)[0]  # the lease report's row for the engine process
    assert f"engine (pid {standin.pid})" in engine_row and "OMP_NUM_THREADS=3" in engine_row
    assert "own time: spin_forever (<string>)" in engine_row


def test_the_sidecar_finds_an_untitled_engine_by_the_pid_vllm_logs(standin, tmp_path):
    """Without setproctitle vLLM's engine keeps its parent's command line; its log lines still name it."""
    log = tmp_path / "step.log"
    log.write_text(
        f"\x1b[36m(MapWorker(MapBatches(vLLMEngineStageUDF)) pid=1)\x1b[0m (EngineCore pid={standin.pid}) INFO\n"
    )
    assert sidecar.find_engine("EngineCore", timeout=5, log=str(log)) == standin.pid


def test_no_engine_is_an_error_not_a_hang():
    r = sidecar.sample("t", after=0, seconds=1, pattern="no-such-process-anywhere-4242", wait=1)
    assert "no process matching" in r["error"]


def test_stacks_are_summarized_by_function_whatever_the_line():
    raw = "\n".join(
        [
            "thread (0x1);run (threading.py:10);step (vllm/v1/engine/core.py:345);execute (runner.py:7) 30",
            "thread (0x1);run (threading.py:10);step (vllm/v1/engine/core.py:350) 10",
            "thread (0x2);loop (zmq.py:3);send (zmq.py:9) 60",
        ]
    )
    s = sidecar.summarize_stacks(raw)
    assert s["samples"] == 100
    assert s["threads"] == [["thread (0x2)", 0.6], ["thread (0x1)", 0.4]]
    assert s["own"] == [["send (zmq.py)", 0.6], ["execute (runner.py)", 0.3], ["step (core.py)", 0.1]]
    assert dict(map(tuple, s["total"]))["step (core.py)"] == 0.4  # both lines of step: one function


def test_the_sidecar_sees_a_thread_held_back_by_another_on_its_cpu(tmp_path, monkeypatch):
    """The engine's spinner and a neighbour's pinned to one CPU: each runs about half the time and waits, runnable,
    the other half; the sidecar says so, and on which CPU (what the sixteenth lease's 2x swing needs looked at)."""
    monkeypatch.setenv("NF_WORK", str(tmp_path))
    cpu = min(os.sched_getaffinity(0))
    with standins("EngineCore-pinned", "x", cpu=cpu):
        r = sidecar.sample("t", after=0.5, seconds=3, pattern="EngineCore-pinned", wait=20)
    spinner = r["engine"]["busiest_threads"][0]
    assert 0.25 < spinner["cpu"] < 0.75 and spinner["runqueue_wait"] > 0.25, spinner
    assert spinner["cpus"] == {cpu: 1.0} and spinner["involuntary_per_s"] > 1
    assert spinner["mhz"] is None or spinner["mhz"] > 100
    row = report.report_lines("sidecar-t", r)[0]
    assert f"runnable but waiting {spinner['runqueue_wait']:.0%}" in row and f"on CPU {cpu} 100%" in row


def test_an_engine_that_ends_inside_the_window_keeps_what_was_seen_of_it(tmp_path, monkeypatch):
    """Short runs end before the window does (sixteenth lease: three of five samples lost to FileNotFoundError)."""
    monkeypatch.setenv("NF_WORK", str(tmp_path))
    with standins("EngineCore-brief", seconds=2.5):
        r = sidecar.sample("t", after=0.5, seconds=6, pattern="EngineCore-brief", wait=20)
    engine = r["engine"]
    assert 0.5 < engine["ended_s"] < 4.5 and engine["watched_s"] <= engine["ended_s"]
    assert engine["busiest_threads"][0]["cpu"] > 0.5  # its spinner, over the time it was there
    assert "ended_s" not in r["frontend"] and r["frontend"]["watched_s"] >= 5
    assert "ended" in report.report_lines("sidecar-t", r)[0]


def test_an_engine_gone_before_the_window_is_an_error_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("NF_WORK", str(tmp_path))
    with standins("EngineCore-gone", seconds=0.5) as (proc,):
        r = sidecar.sample("t", after=3, seconds=1, pattern="EngineCore-gone", wait=20)
    assert f"the engine (pid {proc.pid}) ended within 3 s" in r["error"]


def test_a_run_says_how_busy_its_host_was():
    """`common.HostLoad` around a run: this test's own spin shows as (at least most of) one core busy."""
    import time

    from benchmarks.gpu.common import HostLoad

    host, t = HostLoad(), time.monotonic()
    while time.monotonic() - t < 1.0:
        pass
    h = host.read()
    assert h["seconds"] >= 1.0 and 0.8 <= h["cores_busy"] <= os.cpu_count() + 0.01 and 0 <= h["steal"] < 1
    run = {"seeded": True, "tokens_per_s": 1000.0, "host": h}
    assert f"host: {h['cores_busy']:.1f} cores busy" in report.report_lines("synth_raw-x", {"runs": [run]})[0]


def test_isolating_the_engines_busy_thread_frees_it_from_its_neighbour_and_puts_everything_back(tmp_path, monkeypatch):
    """`--isolate`: the engine's spinner, pinned with a neighbour's on one CPU, gets that CPU to itself (the neighbour
    and every other thread moved off it) for as long as the engine runs; then each moved thread's CPUs are restored."""
    monkeypatch.setenv("NF_WORK", str(tmp_path))
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("isolating a CPU needs two")
    late = []  # a process started while the isolation holds inherits its narrowed CPUs: they are put back too
    starter = threading.Timer(
        2.5, lambda: late.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]))
    )
    with standins("EngineCore-isolated", "neighbour", seconds=5, cpu=cpus[0]) as (_, neighbour):
        starter.start()
        r = sidecar.sample("t", after=1.5, seconds=2, pattern="EngineCore-isolated", wait=20, isolated=True)
        starter.join()
        try:
            assert os.sched_getaffinity(neighbour.pid) == {cpus[0]}  # put back once the engine ended
            assert os.sched_getaffinity(late[0].pid) == os.sched_getaffinity(0) == set(cpus)
        finally:
            late[0].kill()
            late[0].wait()
    done = r["isolated"]
    if done["moved"] < 2:
        pytest.skip(f"this container may not move other processes' threads: {done}")
    assert done["cpu"] == cpus[0] and done["restored"] >= 1
    spinner = r["engine"]["busiest_threads"][0]
    assert spinner["tid"] == done["tid"] and spinner["cpu"] > 0.8 and spinner["runqueue_wait"] < 0.15, spinner
    assert any(f"alone on CPU {cpus[0]}" in line for line in report.report_lines("sidecar-t", r))
