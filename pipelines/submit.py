"""Submit a recipe to a Ray cluster: one Ray job per stage, in order, following each job's logs.

Cluster:  nanoforge submit pipelines/recipes/nano2.yaml --address http://HEAD:8265 --output_dir /shared/runs/nano2
Local:    ray start --head && nanoforge submit pipelines/recipes/demo.yaml --address http://127.0.0.1:8265

Each job runs `python -m <stage module> <args>` (the same arguments `nanoforge run` uses). Its
`submission_id` is derived from what the stage's artifact hash is made of (config content, flags, the hashes of
the local inputs they name, the code version) and its upstream jobs' ids, so submitting the same recipe again finds
the finished jobs and reuses them instead of running duplicates, and editing a config or an input submits anew; a job
that failed is submitted again under the next `-retryN` id. Stage `resources` in the recipe become the job's entrypoint
resources (`num_gpus: 1` -> `entrypoint_num_gpus=1`); a training stage's `num_workers: N` runs it as N Ray Train
workers (`nanoforge sft ... --num_processes N --launcher ray`, sft/launch.py), one GPU each where the cluster has them.

Code. By default the cluster already has nanoforge installed (the usual image-based setup). With
`--working_dir .` the project folder is uploaded as the job's runtime env; the job then also gets
`RAY_OVERRIDE_JOB_RUNTIME_ENV=1`, because vLLM and TRL call `ray.init` inside the job, and Ray refuses to
merge a job's `working_dir` with a driver's runtime env otherwise. Secret files (`.env`, `*.pem`, token and
credential files, SSH keys, `.netrc`, ...: SECRET_EXCLUDES) are never uploaded, whatever `.gitignore` says, and
submit prints what goes up (file count and size) and which secret-looking files it left out. Output paths must be
visible to every node (a shared filesystem or object store): relative ones are made absolute here.

Authentication. With token authentication on (the default in Ray 2.60), Ray's client reads the token from
`RAY_AUTH_TOKEN` or `~/.ray/auth_token`, as the `ray` CLI does; it is sent as a header and never printed.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.core.artifacts import canonical_json, code_version, input_hash
from pipelines.core.commands import TRAINING_COMMANDS
from pipelines.core.config import ConfigError, load_yaml, parse
from pipelines.core.recipe import Stage, check_stages, load_recipe, select_stages

RESOURCE_ARGS = {"num_cpus": "entrypoint_num_cpus", "num_gpus": "entrypoint_num_gpus", "memory": "entrypoint_memory"}
UPLOAD_EXCLUDES = [".venv", ".git", "runs", "benchmarks/data", "**/__pycache__", "*.egg-info"]
# Never uploaded with --working_dir, whatever .gitignore says (gitignore-style patterns, as Ray's `excludes`).
# Token files are matched by their usual names, not `*token*`, which would drop sft/tokenizer.py and the job's code.
SECRET_EXCLUDES = [
    ".env",
    ".env.*",
    "*.env",
    ".envrc",
    ".netrc",
    "_netrc",
    ".git-credentials",
    ".pypirc",
    ".npmrc",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.keystore",
    "*.jks",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "token",
    "*.token",
    "*_token",
    "*-token",
    "*token.txt",
    "*token.json",
    "auth_token",
    "*secret*",
    "credentials",
    "credentials.*",
    "*credentials*.json",
    "service-account*.json",
    ".ssh",
    ".aws",
    ".gnupg",
    ".kube",
    ".docker",
    ".config/gcloud",
    ".huggingface",
    ".cache/huggingface",
]


@dataclass
class SubmitConfig:
    recipe: str = field(default="", metadata={"help": "Recipe YAML (also the first positional argument)."})
    address: str | None = field(default=None, metadata={"help": "Ray dashboard address, e.g. http://HEAD:8265."})
    output_dir: str | None = field(default=None, metadata={"help": "Root of stage outputs, visible to all nodes."})
    from_stage: str | None = field(default=None, metadata={"help": "Start at this stage (also --from)."})
    only: str | None = field(default=None, metadata={"help": "Submit only this stage."})
    force: bool = field(default=False, metadata={"help": "Submit new jobs even where a finished one exists."})
    working_dir: str | None = field(default=None, metadata={"help": "Upload this folder as the jobs' code."})
    poll_s: float = field(default=1.0, metadata={"help": "Seconds between retries when the log stream drops."})
    agent_wait_s: float = field(default=120.0, metadata={"help": "How long to retry while no job agent is up."})
    log_tail_lines: int = field(default=40, metadata={"help": "Log lines shown when a job fails."})


def parse_args(argv: list[str] | None = None) -> tuple[SubmitConfig, list[Stage]]:
    """Parse flags and load the recipe (all its stages; --from/--only select among them in main)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--recipe", *argv]
    argv = ["--from_stage" if a == "--from" else a for a in argv]
    cfg = parse(SubmitConfig, argv=argv)
    if not cfg.recipe:
        raise ConfigError("usage: nanoforge submit RECIPE.yaml --address http://HEAD:8265")
    output_dir = os.path.abspath(cfg.output_dir) if cfg.output_dir and "://" not in cfg.output_dir else cfg.output_dir
    stages = load_recipe(cfg.recipe, output_dir)
    if output_dir is None:  # the recipe's own default, made absolute so every node agrees on it
        stages = load_recipe(cfg.recipe, os.path.abspath(stages[0].root))
    return cfg, check_stages(cfg.recipe, stages)


def submission_ids(stages: list[Stage]) -> dict[str, str]:
    """Stage name -> job id: the stage's identity (`stage_identity`) chained with its upstream stages' ids."""
    ids: dict[str, str] = {}
    for stage in stages:
        upstream = ",".join(ids[n] for n in stage.needs)
        digest = hashlib.sha256(f"{stage_identity(stage)}|{upstream}".encode()).hexdigest()[:16]
        ids[stage.name] = f"nanoforge-{stage.name}-{digest}"
    return ids


def stage_identity(stage: Stage) -> str:
    """What the stage's artifact hash is made of, known before it runs: the config's content (not its path), the
    other flags, the hashes of the local files and folders they name (datasets, eval sets, models, templates), and
    the code version. Upstream stages' outputs (under the recipe's root) are left to the id chain: they do not
    exist yet on a first submit. Editing a config, an input or the code gives a new job; nothing else does."""
    argv, config = list(stage.argv), None
    if "--config" in argv:
        i = argv.index("--config")
        config = load_yaml(argv[i + 1])
        del argv[i : i + 2]
    root = os.path.abspath(stage.root)
    inputs = {}
    for value in sorted(set(_strings([argv, config]))):
        path = os.path.abspath(value)
        if os.path.exists(path) and not (path == root or path.startswith(root + os.sep)):
            inputs[value] = input_hash(path)
    return canonical_json([stage.module, argv, config, inputs, code_version()])


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [s for v in value or () for s in _strings(v)] if isinstance(value, list) else []


def job_kwargs(stage: Stage, cfg: SubmitConfig) -> dict:
    """Entrypoint, resources and runtime env of one stage's job."""
    runtime_env = dict(stage.runtime_env)
    env_vars = {"PYTHONUNBUFFERED": "1", **runtime_env.pop("env_vars", {})}
    if cfg.working_dir:
        runtime_env.setdefault("working_dir", cfg.working_dir)
    if "working_dir" in runtime_env:  # a recipe's own excludes add to ours, never replace the secret patterns
        runtime_env["excludes"] = [*UPLOAD_EXCLUDES, *SECRET_EXCLUDES, *runtime_env.get("excludes", [])]
        env_vars.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
    argv = stage.argv + (["--force", "true"] if cfg.force and stage.output_dir != stage.root else [])  # publish: none
    entrypoint = ["python", "-m", stage.module, *argv]
    resources = dict(stage.resources)
    workers = resources.pop("num_workers", None)
    if workers:  # N Ray Train workers (one GPU each where the cluster has them) started by the job's driver
        if stage.command not in TRAINING_COMMANDS:
            raise ConfigError(f"stage '{stage.name}': num_workers is for {', '.join(TRAINING_COMMANDS)} only")
        entrypoint = ["python", "-m", "pipelines.cli", stage.command, *argv]
        entrypoint += ["--num_processes", str(workers), "--launcher", "ray"]
    kwargs = {
        "entrypoint": shlex.join(entrypoint),
        "runtime_env": {**runtime_env, "env_vars": env_vars},
        "metadata": {"nanoforge_stage": stage.name, "nanoforge_recipe": os.path.basename(cfg.recipe)},
    }
    for key, value in resources.items():
        if key not in RESOURCE_ARGS:
            kwargs.setdefault("entrypoint_resources", {})[key] = value
        else:
            kwargs[RESOURCE_ARGS[key]] = value
    return kwargs


def upload_listing(working_dir: str, excludes: list[str]) -> tuple[list[Path], list[Path]]:
    """(files Ray will upload from `working_dir`, secret-looking files left out), walked the way Ray packs it.

    Uses Ray's own packaging walk (ray 2.60's `_dir_travel`: its default excludes, .gitignore/.rayignore, then
    `excludes`), so the summary is what goes up, not an estimate.
    """
    from ray._private import ray_constants
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes
    from ray._private.thirdparty.pathspec import PathSpec

    root = Path(working_dir).absolute()
    secret = PathSpec.from_lines("gitwildmatch", SECRET_EXCLUDES)
    others = [e for e in ray_constants.get_runtime_env_default_excludes() + excludes if e not in SECRET_EXCLUDES]
    include_gitignore = os.environ.get(ray_constants.RAY_RUNTIME_ENV_IGNORE_GITIGNORE, "0") != "1"
    uploaded: list[Path] = []
    left_out: list[Path] = []

    def handler(path: Path) -> None:
        if path.is_file():
            (left_out if secret.match_file(str(path.relative_to(root))) else uploaded).append(path)

    _dir_travel(root, [_get_excludes(root, others)], handler, include_gitignore=include_gitignore)
    return sorted(uploaded), sorted(left_out)


def describe_upload(working_dir: str, excludes: list[str]) -> str:
    uploaded, left_out = upload_listing(working_dir, excludes)
    size = sum(f.stat().st_size for f in uploaded)
    root = Path(working_dir).absolute()
    text = f"[submit] --working_dir {working_dir}: uploading {len(uploaded)} files, {size / 2**20:.1f} MiB"
    if left_out:
        names = ", ".join(str(f.relative_to(root)) for f in left_out[:20])
        more = f" and {len(left_out) - 20} more" if len(left_out) > 20 else ""
        text += f"; left out as secrets: {names}{more}"
    return text


def follow(client, job_id: str, poll_s: float) -> str:
    """Stream the job's log as it is written (`tail_job_logs`, one websocket) until the job ends; return its final
    status name. A stream that drops (a busy or restarting head) is reopened for up to ~a minute; it restarts at
    the top of the log, so what was already printed is skipped."""
    import asyncio

    import aiohttp
    import requests
    from ray.job_submission import JobStatus

    shown = 0  # characters of the log printed so far

    async def stream() -> None:
        nonlocal shown
        seen = 0
        async for chunk in client.tail_job_logs(job_id):
            new = chunk[max(0, shown - seen) :]
            seen += len(chunk)
            if new:
                sys.stdout.write(new)
                sys.stdout.flush()
                shown = max(shown, seen)

    failures = 0
    while True:
        try:
            asyncio.run(stream())
            status = client.get_job_status(job_id)
            failures = 0
        except (RuntimeError, aiohttp.ClientError, requests.exceptions.ConnectionError):
            failures += 1  # tail_job_logs raises RuntimeError when the connection closes before the job ends
            if failures * poll_s > 60:
                raise
            time.sleep(poll_s)
            continue
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status.value
        time.sleep(poll_s)


def submit_with_retry(client, job_id: str, kwargs: dict, wait_s: float) -> None:
    """Submit, waiting out "No available agent" (a just-started node's job agent is not up yet)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.submit_job(submission_id=job_id, **kwargs)
            return
        except RuntimeError as e:
            if "try again later" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def find_or_submit(client, stage: Stage, base_id: str, cfg: SubmitConfig) -> tuple[str, bool]:
    """The job to follow for `stage` and whether it is new or still running (False: it already succeeded).

    A failed or stopped job, or a finished one under --force, is never resubmitted under its own id (Ray keeps
    ids unique): the next free `-retryN` id is used.
    """
    from ray.job_submission import JobStatus

    job_id, attempt = base_id, 0
    while True:
        try:
            info = client.get_job_info(job_id)
        except RuntimeError as e:
            if "404" not in str(e):  # anything but "no such job" is a real error
                raise
            submit_with_retry(client, job_id, job_kwargs(stage, cfg), cfg.agent_wait_s)
            print(f"[{stage.name}] submitted {job_id}", flush=True)
            return job_id, True
        if info.status == JobStatus.SUCCEEDED and not cfg.force:
            return job_id, False
        if info.status in (JobStatus.PENDING, JobStatus.RUNNING):
            print(f"[{stage.name}] following running job {job_id}", flush=True)
            return job_id, True
        attempt += 1
        job_id = f"{base_id}-retry{attempt}"


def main(argv: list[str] | None = None) -> int:
    from ray.job_submission import JobStatus, JobSubmissionClient

    cfg, stages = parse_args(argv)
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ConfigError("submit needs --address http://HEAD:8265 (or RAY_ADDRESS)")
    client = JobSubmissionClient(address)
    ids = submission_ids(stages)
    if cfg.working_dir:
        print(describe_upload(cfg.working_dir, job_kwargs(stages[0], cfg)["runtime_env"]["excludes"]), flush=True)
    for stage in select_stages(stages, cfg.from_stage, cfg.only):
        job_id, fresh = find_or_submit(client, stage, ids[stage.name], cfg)
        if not fresh:
            print(f"[{stage.name}] reusing finished job {job_id}: {stage.output_dir}", flush=True)
            continue
        final = follow(client, job_id, cfg.poll_s)
        if final != JobStatus.SUCCEEDED.value:
            tail = "\n".join(client.get_job_logs(job_id).splitlines()[-cfg.log_tail_lines :])
            print(f"\n[{stage.name}] job {job_id} {final}. Last log lines:\n{tail}", file=sys.stderr)
            return 1
        print(f"[{stage.name}] {final}: {stage.output_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
