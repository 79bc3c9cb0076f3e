"""`nanoforge run` and `nanoforge submit` on real stages: local in-process, and as jobs on a real `ray start
--head`."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipelines import run
from pipelines.core.artifacts import read_manifest
from pipelines.core.config import ConfigError

RECIPE = """\
# A two-stage recipe for tests: demo data and a tiny base
# nanoforge run {path}
stages:
  - name: data
    command: demo-data
    args: {{num_pages: 30, num_pii_pages: 2, num_exact_duplicates: 3, num_near_duplicates: 3, num_spam_pages: 4,
            num_non_english_pages: 2, num_shards: 2, num_train_problems: 10, num_test_problems: 4}}
  - name: base
    command: init-base
    args: {{preset: tiny, corpus_paths: ["{{data}}/math/train.jsonl"]}}
    resources: {{num_cpus: 1}}
"""


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(path=path))
    return path


def test_run_resumes_skips_and_forces(recipe, tmp_path, capsys):
    out = tmp_path / "runs"
    assert run.main([str(recipe), "--output_dir", str(out), "--only", "data"]) == 0
    first = read_manifest(out / "data")
    assert first["counts"] and read_manifest(out / "base") is None
    # A later run resumes: the finished stage is up to date, the next one runs and reads it.
    assert run.main([str(recipe), "--output_dir", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| data | up to date |" in table and "| base | done |" in table
    assert read_manifest(out / "data")["created_at"] == first["created_at"]
    assert read_manifest(out / "base")["inputs"]  # wired to the data stage's output
    assert "| base | done |" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()  # the run report links each stage's manifest and card
    assert "data/manifest.json" in page and "base/README.md" in page and "nanoforge init-base" in page
    # --force reruns the selected stage only.
    assert run.main([str(recipe), "--output_dir", str(out), "--from", "base", "--force"]) == 0
    assert "| base | done |" in capsys.readouterr().out


PUBLISH = """\
  - name: publish_base
    command: publish
    output: false
    args: {artifact: "{base}", repo_id: "demo/tiny-base", dry_run: "{root}/publish/base"}
"""


def test_rerun_is_a_no_op_that_ends_green(tmp_path, capsys):
    """`make demo` twice: the second run skips every stage, and publish's dry run into its own up-to-date preview
    is a no-op (it used to stop at "--dry_run directory ... is not empty")."""
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(path=path) + PUBLISH)
    out = tmp_path / "runs"
    assert run.main([str(path), "--output_dir", str(out)]) == 0
    preview = {p: p.stat().st_mtime_ns for p in (out / "publish" / "base").rglob("*")}
    capsys.readouterr()
    assert run.main([str(path), "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| data | up to date |" in printed and "| base | up to date |" in printed
    assert "| publish_base | done |" in printed and "already holds exactly these files" in printed
    assert preview == {p: p.stat().st_mtime_ns for p in (out / "publish" / "base").rglob("*")}  # untouched
    # --force reruns the stages with artifacts; publish has no --force of its own and still ends green
    assert run.main([str(path), "--output_dir", str(out), "--only", "publish_base", "--force"]) == 0


def test_recipe_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("# x\n# nanoforge run bad.yaml\nstages:\n  - {name: a, command: demo-data, args: {seeed: 1}}\n")
    with pytest.raises(ConfigError, match="stage 'a'.*seeed"):
        run.parse_args([str(bad)])
    bad.write_text("stages:\n  - {name: a, command: init-base, args: {corpus_paths: ['{nope}/x']}}\n")
    with pytest.raises(ConfigError, match=r"'\{nope\}' does not name an earlier stage"):
        run.parse_args([str(bad)])
    bad.write_text("stages:\n  - {name: a, command: demo-data}\n")
    with pytest.raises(ConfigError, match="--only zzz: no such stage"):
        run.parse_args([str(bad), "--only", "zzz"])


def free_ports(n: int) -> list[int]:
    """n distinct free ports: each socket stays bound until all are chosen (ports asked for one at a time can repeat:
    a CI run's head got the same port for two of its agents and would not start)."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


AGENT_PORTS = (
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
    "ray-client-server-port",
)


@pytest.fixture
def ray_cluster():
    """A real single-node Ray cluster on loopback with token authentication.

    Started with `--block` in its own process group and stopped by signalling that group: `ray stop` would
    also kill every other Ray on the machine (such as the embedded one other tests share).
    """
    bin_dir = Path(sys.executable).parent
    token = secrets.token_hex(16)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    port, dash, *agents = free_ports(2 + len(AGENT_PORTS))
    temp_dir = tempfile.mkdtemp(prefix="nfray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    start = [
        str(bin_dir / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(port),
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dash),
        "--num-cpus",
        "2",
        # The agents' default ports are taken while the embedded Ray of other tests runs; the head's job agent
        # would then never come up ("No available agent to submit job").
        *(f"--{name}={p}" for name, p in zip(AGENT_PORTS, agents, strict=True)),
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    log = open(Path(temp_dir) / "head.log", "w")
    head = subprocess.Popen(start, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while True:  # wait for the job server
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # answered (e.g. 401 without a token): it is up
                break
            except OSError:
                assert head.poll() is None, (Path(temp_dir) / "head.log").read_text()
                assert time.monotonic() < deadline, "Ray head did not start in 120 s"
                time.sleep(1)
        yield address, token, env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_submit_runs_jobs_and_resubmission_reuses_them(recipe, tmp_path, ray_cluster):
    # `nanoforge submit` runs in its own process, as a user runs it: Ray caches the auth token per process,
    # so one that already started the embedded Ray of other tests would send that token instead.
    address, token, env = ray_cluster
    out = tmp_path / "cluster_runs"
    argv = [sys.executable, "-m", "pipelines.cli", "submit", str(recipe), "--address", address]
    argv += ["--output_dir", str(out), "--poll_s", "0.5"]

    def submit_cli():
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    printed = submit_cli()
    assert "submitted nanoforge-data-" in printed and "submitted nanoforge-base-" in printed
    assert read_manifest(out / "data") and read_manifest(out / "base")
    made = read_manifest(out / "base")["created_at"]
    # Submitting again finds the finished jobs: nothing runs twice.
    printed = submit_cli()
    assert "reusing finished job nanoforge-data-" in printed and "submitted" not in printed
    assert read_manifest(out / "base")["created_at"] == made
    assert token not in printed

    list_jobs = "import json, sys; from ray.job_submission import JobSubmissionClient as C; "
    list_jobs += "print(json.dumps([[j.submission_id, j.entrypoint] for j in C(sys.argv[1]).list_jobs()]))"
    done = subprocess.run([sys.executable, "-c", list_jobs, address], env=env, capture_output=True, text=True)
    jobs = json.loads(done.stdout.strip().splitlines()[-1])
    assert len([sid for sid, _ in jobs if sid and sid.startswith("nanoforge-")]) == 2
    assert json.dumps([entry for _, entry in jobs]).count("pipelines.demo_data") == 1


def test_summary_counts_show_rejections_as_their_total():
    counts = {"input": 10, "kept": 6, "rejected": {"exact_duplicate": 3, "wrong_language": 1}, "quarantined": 0}
    assert run.summarize(counts) == "input=10 kept=6 rejected=4 quarantined=0"


def test_submit_follow_streams_the_log_once_across_a_dropped_connection(capsys):
    """follow() reads the log through tail_job_logs; a stream that drops is reopened without printing twice."""
    from ray.job_submission import JobStatus

    from pipelines import submit

    class Client:  # JobSubmissionClient's two calls follow() makes
        def __init__(self):
            self.streams = 0

        async def tail_job_logs(self, job_id):
            self.streams += 1
            yield "line 1\n"
            if self.streams == 1:
                raise RuntimeError("Connection closed unexpectedly")  # what Ray raises when the head drops it
            yield "line 2\n"

        def get_job_status(self, job_id):
            return JobStatus.SUCCEEDED

    client = Client()
    assert submit.follow(client, "job", poll_s=0.01) == "SUCCEEDED"
    assert capsys.readouterr().out == "line 1\nline 2\n" and client.streams == 2


def test_report_compares_checkpoints(tmp_path):
    """report.md's evaluation section: every checkpoint with an eval.json, in recipe order, one row per benchmark
    and mode; an old single-set eval.json counts as its dataset; a stage without one is left out; a plot beside it."""
    from pipelines.core.eval_report import eval_section

    stats = {"think": {"pass@1": 0.25, "pass@4": 0.5, "maj@4": 0.25}, "no_think": {"pass@1": 0.1, "pass@4": 0.2}}
    (tmp_path / "base").mkdir()
    old = {"dataset": "x/test.jsonl", "modes": {"think": {"pass@1": 0.0}}}
    (tmp_path / "base" / "eval.json").write_text(json.dumps(old))
    (tmp_path / "curate").mkdir()
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "eval.json").write_text(json.dumps({"benchmarks": {"gsm8k": {"modes": stats}}}))
    stages = [(name, str(tmp_path / name)) for name in ("base", "curate", "sft")]
    section = eval_section(tmp_path, stages)
    assert section.splitlines()[3:8] == [
        "| checkpoint | benchmark | mode | pass@1 | pass@4 | maj@4 |",
        "|---|---|---|---|---|---|",
        "| base | test | think | 0.000 | - | - |",
        "| sft | gsm8k | think | 0.250 | 0.500 | 0.250 |",
        "| sft | gsm8k | no_think | 0.100 | 0.200 | - |",
    ]
    assert "![pass@1](eval.png)" in section and (tmp_path / "eval.png").stat().st_size > 1000
    assert eval_section(tmp_path, [("curate", str(tmp_path / "curate"))]) == ""  # nothing evaluated: no section
