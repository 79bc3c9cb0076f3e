"""`nanoforge submit` without a cluster: what a job uploads with --working_dir, and its submission id."""

from __future__ import annotations

import zipfile

from pipelines import submit
from pipelines.core.recipe import Stage

SECRETS = [
    ".env",
    ".env.production",
    "hf_token",
    "id_rsa",
    "deploy/server.pem",
    ".netrc",
    "credentials",
    ".aws/credentials",
    ".ssh/id_ed25519",
    "gcp-credentials.json",
    ".git/config",
    "my.token",
]
CODE = ["pipelines/curate.py", "sft/tokenizer.py", "pyproject.toml", "sft/tok/tokenizer.json", ".gitignore"]


def stage(**overrides) -> Stage:
    fields = dict(
        name="curate",
        command="curate",
        module="pipelines.curate",
        argv=["--output_dir", "/o/curate"],
        output_dir="/o/curate",
        root="/o",
        needs=[],
        resources={},
        runtime_env={},
    )
    return Stage(**(fields | overrides))


def test_working_dir_upload_leaves_secret_files_out_and_says_what_goes_up(tmp_path):
    project = tmp_path / "project"
    for rel in SECRETS + CODE:
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text("runs/\n" if rel == ".gitignore" else f"contents of {rel}\n")
    cfg = submit.SubmitConfig(recipe="r.yaml", working_dir=str(project))
    # A recipe's own excludes add to the secret patterns, they do not replace them.
    runtime_env = submit.job_kwargs(stage(runtime_env={"excludes": ["notes/"]}), cfg)["runtime_env"]

    from ray._private import ray_constants
    from ray._private.runtime_env.packaging import _zip_files

    zipped = tmp_path / "upload.zip"  # what Ray itself would pack for the job
    excludes = ray_constants.get_runtime_env_default_excludes() + runtime_env["excludes"]
    _zip_files(str(project), excludes, str(zipped), include_gitignore=True)
    names = {n for n in zipfile.ZipFile(zipped).namelist() if not n.endswith("/")}
    assert names == set(CODE)
    assert "notes/" in runtime_env["excludes"]

    text = submit.describe_upload(str(project), runtime_env["excludes"])
    size = sum((project / rel).stat().st_size for rel in CODE)
    assert f"uploading {len(CODE)} files, {size / 2**20:.1f} MiB" in text
    assert "left out as secrets:" in text and ".env" in text and "hf_token" in text


def test_submission_id_follows_config_content_inputs_and_code_version_not_the_yaml_path(tmp_path, monkeypatch):
    from pipelines.core import artifacts
    from pipelines.core.recipe import load_recipe

    config, prompts = tmp_path / "synth.yaml", tmp_path / "prompts.jsonl"
    config.write_text("backend: replay\nprompt_format: gsm8k\nmax_new_tokens: 64\n")
    prompts.write_text('{"question": "1 + 1?", "answer": "#### 2"}\n')
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""stages:
  - name: synth
    command: synth
    config: {config}
    args: {{prompts_path: {prompts}}}
  - name: select
    command: select
    args: {{traces_path: "{{synth}}"}}
""")

    def ids():
        return submit.submission_ids(load_recipe(recipe, str(tmp_path / "runs")))

    first = ids()
    assert ids() == first  # nothing changed: the finished jobs are reused
    config.write_text("backend: replay\nprompt_format: gsm8k\nmax_new_tokens: 128\n")  # same path, new content
    edited = ids()
    assert edited["synth"] != first["synth"] and edited["select"] != first["select"]  # downstream follows
    prompts.write_text('{"question": "2 + 2?", "answer": "#### 4"}\n')
    new_input = ids()
    assert new_input["synth"] != edited["synth"]
    monkeypatch.setattr(submit, "code_version", lambda: "nanoforge==9.9")
    assert ids()["synth"] != new_input["synth"]
    (tmp_path / "runs" / "synth").mkdir(parents=True)  # an upstream output appearing does not change the ids
    monkeypatch.setattr(submit, "code_version", artifacts.code_version)
    assert ids() == new_input


def test_num_workers_submits_a_training_stage_as_ray_train_workers():
    """`resources: {num_workers: 2, num_gpus: 0}` on sft: the job's driver starts 2 Ray Train workers; num_workers
    is not an entrypoint resource (the driver needs none); on a data stage it is a mistake."""
    import shlex

    import pytest

    from pipelines.core.config import ConfigError

    cfg = submit.SubmitConfig(recipe="r.yaml")
    sft = stage(
        name="sft",
        command="sft",
        module="sft.train",
        argv=["--config", "s.yaml"],
        resources={"num_workers": 2, "num_cpus": 1},
    )
    kwargs = submit.job_kwargs(sft, cfg)
    assert shlex.split(kwargs["entrypoint"]) == [
        "python",
        "-m",
        "pipelines.cli",
        "sft",
        "--config",
        "s.yaml",
        "--num_processes",
        "2",
        "--launcher",
        "ray",
    ]
    assert kwargs["entrypoint_num_cpus"] == 1 and "entrypoint_resources" not in kwargs
    single = submit.job_kwargs(stage(name="sft", command="sft", module="sft.train", argv=[]), cfg)
    assert shlex.split(single["entrypoint"]) == ["python", "-m", "sft.train"]
    with pytest.raises(ConfigError, match="num_workers is for sft, dpo, grpo, distill only"):
        submit.job_kwargs(stage(resources={"num_workers": 2}), cfg)
