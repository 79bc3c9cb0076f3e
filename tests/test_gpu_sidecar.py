"""The GPU benchmarks' sidecar (benchmarks/gpu/sidecar.py) against a real process standing in for vLLM's EngineCore:
it must find the process and its parent, see which thread burns the CPU, and (py-spy) in which function."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks.gpu import report, sidecar

pytestmark = pytest.mark.timeout(120)

SPINNER = """
import threading, time
def spin_forever():
    x = 0
    while True:
        x += 1
threading.Thread(target=spin_forever, daemon=True).start()
time.sleep(90)
"""


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
