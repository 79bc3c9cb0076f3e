"""The benchmarks import our modules inside functions (so `--help` stays fast), where only a run would notice a moved
module: `benchmarks.scale` imported `pipelines.runtime` for a whole session after it moved to `pipelines.core`."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("pipelines", "sft", "rl", "compress", "benchmarks")


def imports_of_ours() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted((REPO / "benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(OURS):
                found += [(str(path.relative_to(REPO)), node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.timeout(120)
def test_every_name_the_benchmarks_import_from_our_modules_exists():
    missing = []
    for where, module, name in imports_of_ours():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            missing.append(f"{where}: {module} ({e})")
            continue
        if not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{where}: {module}.{name}")
    assert not missing, "\n".join(missing)


@pytest.mark.timeout(60)
def test_gpu_report_pairs_each_synth_run_with_its_raw_vllm_run():
    """The ratio the issue asks for (stage / raw vLLM, both from process start) pairs a stage run with the raw run
    of its size; the attached run (the stage on a Ray already up) pairs with the same raw run, as raw has no Ray."""
    from benchmarks.gpu.report import report_lines

    res = {
        "synth_raw-dense": {"process_s": 100.0},
        "synth_raw-2k-dense": {"process_s": 380.0},
    }
    stage = {"status": "ok", "batch_size": 64, "model": "dense", "gen_tokens": 8_000_000, "wall_s": 390.0}
    res["synth-2k-dense"] = stage | {"process_s": 400.0}
    res["synth-2k-dense-attached"] = stage | {"process_s": 390.0}
    assert "stage at 0.95x raw's speed" in report_lines("synth-2k-dense", res["synth-2k-dense"], res)[0]
    assert (
        "stage at 0.97x raw's speed" in report_lines("synth-2k-dense-attached", res["synth-2k-dense-attached"], res)[0]
    )


@pytest.mark.timeout(60)
def test_gpu_report_says_how_far_a_cut_off_stage_got():
    from benchmarks.gpu.report import report_lines

    cut = {"model": "dense", "batch_size": 64, "status": "cut off", "process_s": 553.2, "written": 13504}
    line = report_lines("synth-4k-dense-attached", cut | {"planned": 16384}, {})[0]
    assert "cut off at its step limit, 553 s from process start: 13,504 of 16,384 samples written" in line
    timeline = {"resolved_s": 49.2, "engine_ready_s": 101.0, "init_s": 42.0, "graphs_s": 38.0}
    line = report_lines("synth-4k-dense-attached", cut | {"planned": 16384, "timeline": timeline}, {})[0]
    assert "samples written; from process start: model resolved 49 s, engine ready 101 s (init 42 s" in line


@pytest.mark.timeout(60)
def test_the_lease_script_parses():
    import subprocess

    subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu" / "lease.sh")], check=True)


@pytest.mark.timeout(60)
def test_gpu_report_shows_where_the_stage_start_up_goes():
    """`lease.sh startup`'s result: the import that first loads vLLM is marked, a failed one says so, and the actor
    probes show their start times."""
    from benchmarks.gpu.report import report_lines

    step = {"vllm_loaded": False, "error": None}
    imports = [
        step | {"step": "torch", "s": 4.0},
        step | {"step": "ray.data.llm", "s": 9.5, "vllm_loaded": True},
        step | {"step": "vllm AsyncLLM", "s": 0.1, "vllm_loaded": True, "error": "ImportError()"},
    ]
    actor = {"empty": {"ready_s": 1.5, "init_s": 0.0}, "engine stage module": {"ready_s": 16.0, "init_s": 14.2}}
    lines = report_lines("startup", {"imports": [{"result": imports}], "actor": [{"result": actor}]})
    assert "torch 4.0 s; ray.data.llm 9.5 s (vLLM loaded); vllm AsyncLLM 0.1 s (vLLM loaded) failed" in lines[0]
    assert "empty: ready 1.5 s (__init__ 0.0 s); engine stage module: ready 16.0 s (__init__ 14.2 s)" in lines[1]
    build = {"ray_ready_s": 5.8, "imports_joined_s": 9.1, "build_s": 1.2, "vllm_loaded": False, "profile": ""}
    lines = report_lines("startup-build", {"build": [{"result": build}, {"error": "Traceback: boom"}]})
    assert "Ray ready 5.8 s, imports joined 9.1 s, stages built in 1.2 s (vLLM not loaded)" in lines[0]
    assert "Traceback: boom" in lines[1]


CUT_OFF = """
import sys, time
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
import pipelines.synth as synth
from benchmarks.gpu import generation

def synthesize(cfg):  # a stage that starts Ray, has written one shard of 3 samples and goes on generating
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)  # installs Ray's own SIGTERM handler
    traces = Path(cfg.output_dir).parent / f".{Path(cfg.output_dir).name}.partial" / "traces"
    traces.mkdir(parents=True)
    pq.write_table(pa.table({"id": ["a", "b", "c"]}), traces / "00000.parquet")
    print("generating", flush=True)
    time.sleep(60)

synth.synthesize = synthesize
generation.main(["synth", "--model", "dense", "--prompts", "4", "--samples", "2", "--label", "cut"])
"""


@pytest.mark.timeout(90)
def test_a_synth_run_cut_off_by_its_step_limit_saves_how_far_it_got(tmp_path):
    """The thirteenth lease's stage ran past its step's `timeout` and came back with no result at all: the SIGTERM
    now saves its time and the samples its shards hold before Ray's shutdown can outlast the step's grace. The
    stage starts Ray, whose `ray.init` replaced that handler with its own `sys.exit` (fourteenth lease: again no
    result); the handler stays."""
    import json
    import os
    import signal
    import subprocess
    import sys

    (tmp_path / "models" / "dense").mkdir(parents=True)
    env = os.environ | {"NF_WORK": str(tmp_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", CUT_OFF], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"generating", proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and b"cut off by signal" in err
    result = json.loads((tmp_path / "results" / "cut.json").read_text())
    assert result["status"] == "cut off" and result["written"] == 3 and result["planned"] == 8


@pytest.mark.timeout(60)
def test_gpu_report_reads_each_engines_start_off_its_steps_log(tmp_path, capsys):
    """A synth pair's rows say when each engine resolved the model and was ready, from process start: read off
    vLLM's own log lines (stamped to the second, UTC) in the step's log that the result names."""
    import datetime as dt
    import json
    from types import SimpleNamespace

    from benchmarks.gpu.report import report

    start = dt.datetime(2026, 12, 3, 4, 11, 13, tzinfo=dt.UTC).timestamp()
    (tmp_path / "results").mkdir()
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "synth_raw-dense.log").write_text(
        "INFO 12-03 04:11:39 [model.py:623] Resolved architecture: LlamaForCausalLM\n"
        "INFO 12-03 04:12:13 [model_runner.py:747] Graph capturing finished in 24 secs, took 0.44 GiB\n"
        "(EngineCore pid=1) INFO 12-03 04:12:14 [core.py:347] init engine (profile, create kv cache, warmup model) "
        "took 27.44 s\n"
    )
    raw = {"model": "dense", "process_s": 447.0, "process_start": start, "log": "/tmp/nfb/logs/synth_raw-dense.log"}
    raw["runs"] = [{"seeded": True, "seconds": 386.0, "gen_tokens": 16_000_000, "tokens_per_s": 42_000.0}]
    (tmp_path / "results" / "synth_raw-4k-dense.json").write_text(json.dumps(raw))
    report(SimpleNamespace(dir=str(tmp_path / "results")))
    out = capsys.readouterr().out
    assert "from process start: model resolved 26 s, engine ready 61 s (init 27 s, graphs 24 s)" in out
    # a run that started after that log was written (a later step of the same name rewrote it): no timeline from it
    (tmp_path / "results" / "synth_raw-4k-dense.json").write_text(json.dumps(raw | {"process_start": start + 600}))
    report(SimpleNamespace(dir=str(tmp_path / "results")))
    out = capsys.readouterr().out
    assert "42,000 tok/s" in out and "engine ready" not in out


@pytest.mark.timeout(120)
def test_startup_build_times_the_drivers_background_imports_module_by_module():
    """`lease.sh startup-build` also runs the driver's background imports alone under `python -X importtime`: the
    modules that cost most, real figures from this machine (torch and transformers are among them), vLLM not loaded,
    and the report's line for them."""
    from benchmarks.gpu.report import report_lines
    from benchmarks.gpu.startup import import_times

    run = import_times(top=10)
    assert run["rc"] == 0 and not run["vllm_imported"] and len(run["top"]) == 10
    seconds = [float(t.split()[0]) for t in run["top"]]
    assert seconds == sorted(seconds, reverse=True) and 0 < seconds[0] < run["s"]
    assert {"torch", "transformers"} <= {t.split()[-1] for t in run["top"]}
    line = report_lines("startup-build", {"import_times": [run]})[0]
    assert "background imports, pass 1" in line and "vLLM not imported" in line and "torch" in line
