"""`nanoforge run` and `nanoforge submit` on real stages: local in-process, and as jobs on a real `ray start --head`."""

from __future__ import annotations

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

from pipelines import run, submit
from pipelines.config import ConfigError
from pipelines.lineage import read_manifest

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
    # --force reruns the selected stage only.
    assert run.main([str(recipe), "--output_dir", str(out), "--from", "base", "--force"]) == 0
    assert "| base | done |" in capsys.readouterr().out


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    port, dash = free_port(), free_port()
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
def test_submit_runs_jobs_and_resubmission_reuses_them(recipe, tmp_path, ray_cluster, monkeypatch, capsys):
    address, token, env = ray_cluster
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "PATH"):
        monkeypatch.setenv(key, env[key])
    out = tmp_path / "cluster_runs"
    args = [str(recipe), "--address", address, "--output_dir", str(out), "--poll_s", "0.5"]
    assert submit.main(args) == 0
    printed = capsys.readouterr().out
    assert "submitted nanoforge-data-" in printed and "submitted nanoforge-base-" in printed
    assert read_manifest(out / "data") and read_manifest(out / "base")
    made = read_manifest(out / "base")["created_at"]
    # Submitting again finds the finished jobs: nothing runs twice.
    assert submit.main(args) == 0
    printed = capsys.readouterr().out
    assert "reusing finished job nanoforge-data-" in printed and "submitted" not in printed
    assert read_manifest(out / "base")["created_at"] == made
    assert token not in printed

    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(address).list_jobs()
    assert len([j for j in jobs if j.submission_id and j.submission_id.startswith("nanoforge-")]) == 2
    assert json.dumps([j.entrypoint for j in jobs]).count("pipelines.demo_data") == 1
