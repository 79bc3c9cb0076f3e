"""Where the synth stage's start-up goes before vLLM's engine starts (issue 16 item 1; the eleventh lease left ~27 s
between the stage and raw vLLM, all of it before the engine): the driver's imports one by one in a fresh process,
and a Ray actor's start with a runtime env of its own (as the engine actor has), empty and then importing the engine
stage's module. Each measurement runs twice: the first pass fills the page cache.

    python -m benchmarks.gpu.startup --label startup   # writes <work>/results/startup.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from benchmarks.gpu.common import save

# cumulative, in one process, in the order ray.data.llm's build reaches them
IMPORTS = [
    ("torch", "import torch"),
    ("transformers", "import transformers"),
    ("ray.data.llm", "from ray.data.llm import build_processor, vLLMEngineProcessorConfig"),
    ("ray.llm errors (vLLM's exceptions)", "import ray.llm._internal.common.errors"),
    ("the engine stage's module", "from ray.llm._internal.batch.stages import vllm_engine_stage"),
    ("vllm AsyncLLM", "from vllm.v1.engine.async_llm import AsyncLLM"),
]

PROBE = """
import json, sys, time
steps = json.loads(sys.argv[1])
out = []
for name, code in steps:
    t = time.perf_counter()
    try:
        exec(code)
        error = None
    except Exception as e:  # noqa: BLE001 - a step that cannot import is reported, the next ones still run
        error = repr(e)[:300]
    out.append({"step": name, "s": time.perf_counter() - t, "vllm_loaded": "vllm" in sys.modules,
                "modules": len(sys.modules), "error": error})
print(json.dumps(out))
"""

ACTOR = """
import json, time, ray
ray.init(address="auto", log_to_driver=False)

@ray.remote(num_gpus=1)
class Probe:
    def __init__(self, code):
        t = time.perf_counter()
        exec(code)
        self.init_s = time.perf_counter() - t

    def init_seconds(self):
        return self.init_s

out = {}
probes = [("empty", "pass"), ("engine stage module", "from ray.llm._internal.batch.stages import vllm_engine_stage")]
for name, code in probes:
    t = time.perf_counter()
    actor = Probe.options(runtime_env={"env_vars": {"NF_PROBE": name}}).remote(code)
    init_s = ray.get(actor.init_seconds.remote())  # ready: process start + __init__
    out[name] = {"ready_s": time.perf_counter() - t, "init_s": init_s}
    ray.kill(actor)
print(json.dumps(out))
"""


def run(code: str, *args: str) -> object:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    if proc.returncode:
        return {"error": proc.stderr[-1500:], "s": time.perf_counter() - t}
    return {"result": json.loads(proc.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="startup")
    a = ap.parse_args()
    result: dict = {"imports": [], "actor": []}
    for _ in range(2):
        result["imports"].append(run(PROBE, json.dumps(IMPORTS)))
        save(a.label, result)
    subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--num-gpus", "1"],
        check=True,
        capture_output=True,
    )
    try:
        for _ in range(2):
            result["actor"].append(run(ACTOR))
            save(a.label, result)
    finally:
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)
    result["status"] = "ok"
    save(a.label, result)


if __name__ == "__main__":
    main()
