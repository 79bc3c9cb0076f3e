"""Where the synth stage's start-up goes before vLLM's engine starts (issue 16 item 1; the eleventh lease left ~27 s
between the stage and raw vLLM, all of it before the engine): the driver's imports one by one in a fresh process,
and a Ray actor's start with a runtime env of its own (as the engine actor has), empty and then importing the engine
stage's module. Each measurement runs twice: the first pass fills the page cache.

    python -m benchmarks.gpu.startup --label startup   # writes <work>/results/startup.json
    python -m benchmarks.gpu.startup --build MODEL --label startup-build

`--build` times synth's driver alone, as the stage runs it (its imports in a thread while a local Ray starts, then
`backends.vllm`'s build of ray.data.llm's stages), with a profile of the build: the thirteenth lease's stage built
its plan ~10 s after the imports had joined, against ~1.5 s on a 2-core CPU machine.
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


BUILD = """
import cProfile, io, json, pstats, sys, time
from types import SimpleNamespace
t0 = time.perf_counter()
from pipelines.reasoning.backends import import_in_background, vllm
thread = import_in_background("vllm")
import ray
ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
ready = time.perf_counter() - t0
thread.join()
joined = time.perf_counter() - t0
cfg = SimpleNamespace(model_name_or_path=sys.argv[1], max_prompt_tokens=None, max_new_tokens=1024, engine_kwargs={},
                      batch_size=64, num_workers=1, accelerator_type=None, model_revision=None)
ds = ray.data.from_items([{"id": 0}])
profile = cProfile.Profile()
t = time.perf_counter()
profile.enable()
vllm(ds, cfg)
profile.disable()
build = time.perf_counter() - t
table = io.StringIO()
pstats.Stats(profile, stream=table).sort_stats("cumulative").print_stats(40)
loaded = "vllm" in sys.modules
print(json.dumps({"ray_ready_s": ready, "imports_joined_s": joined, "build_s": build, "vllm_loaded": loaded,
                  "profile": table.getvalue()[:12000]}))
"""


IMPORT_THREAD = """
import sys
from pipelines.reasoning.backends import import_in_background
import_in_background("vllm").join()
print("vllm" in sys.modules)  # -X importtime lists failed imports too: vLLM's module is the evidence
"""


def import_times(top: int = 30) -> dict:
    """The driver's background imports alone under `python -X importtime` (fourteenth lease: they joined 18.6 s after
    the stage's start on the H200, against 3.6-3.9 s on a 2-core CPU machine): the modules that cost most,
    cumulative microseconds, and whether vLLM was among them."""
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", IMPORT_THREAD], capture_output=True, text=True, timeout=300
    )
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    return {
        "s": time.perf_counter() - t,
        "rc": proc.returncode,
        "vllm_imported": proc.stdout.strip().endswith("True"),
        "top": [f"{us / 1e6:7.2f} s {name}" for us, name in sorted(rows, reverse=True)[:top]],
    }


def run(code: str, *args: str) -> object:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    if proc.returncode:
        return {"error": proc.stderr[-1500:], "s": time.perf_counter() - t}
    return {"result": json.loads(proc.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="startup")
    ap.add_argument("--build", metavar="MODEL", help="time synth's driver building the vLLM stage for MODEL")
    a = ap.parse_args()
    if a.build:
        result = {"import_times": [import_times() for _ in range(2)], "build": [run(BUILD, a.build) for _ in range(2)]}
        result["status"] = "ok"
        save(a.label, result)
        return
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
