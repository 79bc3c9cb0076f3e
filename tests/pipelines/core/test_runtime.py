"""Where Ray runs: the embedded default never joins a Ray that happens to run on the machine."""

from __future__ import annotations

import os

import pytest


def test_embedded_ray_is_always_a_new_one(monkeypatch):
    """A plain ray.init() joins RAY_ADDRESS, /tmp/ray/ray_current_cluster or any running GCS (another user's `ray
    start`, a test's cluster); without an address we must start our own, so init_ray asks for address='local'."""
    import ray

    from pipelines.core import runtime

    calls = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ray.data.DataContext, "get_current", lambda: type("C", (), {})())
    assert runtime.init_ray(num_cpus=1)
    assert calls[0]["address"] == "local" and calls[0]["num_cpus"] == 1
    assert calls[0]["log_to_driver"] is False  # a local Ray keeps workers' output to itself unless asked
    calls.clear()
    runtime.init_ray("10.0.0.1:6379")
    assert calls[0]["address"] == "10.0.0.1:6379"


WORKER_PRINTS = """
import sys, time
import ray
from pipelines.core.runtime import ray_session

with ray_session(num_cpus=1, worker_logs=sys.argv[1] == "on"):
    ray.get(ray.remote(lambda: print("engine-start-line", flush=True)).remote())
    time.sleep(2)  # Ray forwards worker output in the background
"""


@pytest.mark.timeout(120)
def test_a_local_ray_forwards_worker_output_when_asked():
    """The vLLM backend's progress is its engine actor's log (start, graph capture, tokens/s): on a local Ray synth
    and rephrase ask for the workers' output, which a cluster forwards anyway; other stages keep it off."""
    import subprocess
    import sys

    def printed(mode: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", WORKER_PRINTS, mode], capture_output=True, text=True, timeout=100, env=os.environ
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout + proc.stderr

    assert "engine-start-line" in printed("on")  # off (the default) is checked above, without a Ray
