"""Run a recipe end to end on this machine, resuming where an earlier run stopped.

Local:    nanoforge run pipelines/recipes/demo.yaml [--output_dir runs/demo] [--from sft | --only curate] [--force]
Cluster:  nanoforge submit pipelines/recipes/nano2.yaml --address http://HEAD:8265   (one Ray job per stage)

Stages run in order in this process, on one embedded Ray (or the cluster named by --address / RAY_ADDRESS).
A stage whose artifact is complete and was made from the same config and inputs is skipped by the stage
itself (lineage), so rerunning after a crash picks up at the first unfinished stage. At the end a table says
what each stage did, and `<output_dir>/report.md` keeps it, with the checkpoints' evaluations side by side (a table
and `eval.png`, from each stage's `eval.json`: pipelines/core/eval_report.py); `<output_dir>/report.html` is the run
report (each stage's report, plots and manifest on one static page, see pipelines/core/run_report.py).
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from dataclasses import dataclass, field

from pipelines.core.artifacts import read_manifest
from pipelines.core.config import ConfigError, parse
from pipelines.core.eval_report import eval_section
from pipelines.core.recipe import Stage, check_stages, load_recipe, select_stages
from pipelines.core.run_report import write_run_report
from pipelines.core.runtime import ray_session


@dataclass
class RunConfig:
    recipe: str = field(default="", metadata={"help": "Recipe YAML (also the first positional argument)."})
    output_dir: str | None = field(default=None, metadata={"help": "Root of the stage outputs (default: recipe's)."})
    from_stage: str | None = field(default=None, metadata={"help": "Start at this stage (also --from)."})
    only: str | None = field(default=None, metadata={"help": "Run only this stage."})
    force: bool = field(default=False, metadata={"help": "Rerun the selected stages even if up to date."})
    address: str | None = field(default=None, metadata={"help": "Ray address; default embedded local Ray."})


def parse_args(argv: list[str] | None = None) -> tuple[RunConfig, list[Stage]]:
    """Parse flags, then load the recipe and parse every stage's arguments strictly with its own command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--recipe", *argv]
    argv = ["--from_stage" if a == "--from" else a for a in argv]
    cfg = parse(RunConfig, argv=argv)
    if not cfg.recipe:
        raise ConfigError("usage: nanoforge run RECIPE.yaml [--output_dir DIR] [--from STAGE] [--only STAGE]")
    stages = check_stages(cfg.recipe, load_recipe(cfg.recipe, cfg.output_dir))
    return cfg, select_stages(stages, cfg.from_stage, cfg.only)


def manifest_stamp(path: str) -> int | None:
    """mtime (ns) of a complete artifact's manifest: unchanged after a stage ran means the stage skipped itself."""
    if read_manifest(path) is None:
        return None
    return os.stat(os.path.join(path, "manifest.json")).st_mtime_ns


def summarize(counts: dict) -> str:
    """The first few counts of a manifest, e.g. 'input=1200 kept=870 rejected=326 quarantined=4'; a count broken
    down by reason ({reason: n}) shows as its total."""
    flat = []
    for k, v in counts.items():
        if isinstance(v, dict) and v and all(isinstance(n, int) for n in v.values()):
            v = sum(v.values())
        if isinstance(v, int | float):
            flat.append(f"{k}={v}")
    return " ".join(flat[:4])


def main(argv: list[str] | None = None) -> int:
    cfg, stages = parse_args(argv)
    rows: list[tuple[str, str, str, str]] = []
    status = 0
    with ray_session(cfg.address):
        for stage in stages:
            before = manifest_stamp(stage.output_dir)
            print(f"\n=== [{stage.name}] nanoforge {stage.command} {' '.join(stage.argv)}", flush=True)
            start = time.monotonic()
            try:
                # a stage without an artifact of its own (publish) has nothing to force
                force = cfg.force and stage.output_dir != stage.root
                code = importlib.import_module(stage.module).main(stage.argv + (["--force", "true"] if force else []))
            except Exception as e:  # report which stage failed, keep the table of what finished
                print(f"[{stage.name}] failed: {type(e).__name__}: {e}", file=sys.stderr)
                code = 1
            duration = time.monotonic() - start
            after = read_manifest(stage.output_dir)
            if code:
                rows.append((stage.name, "FAILED", f"{duration:.1f}s", ""))
                status = 1
                break
            skipped = before is not None and before == manifest_stamp(stage.output_dir)
            counts = summarize((after or {}).get("counts", {}))
            rows.append((stage.name, "up to date" if skipped else "done", f"{duration:.1f}s", counts))
    table = ["| stage | status | duration | counts |", "|---|---|---|---|"]
    table += [f"| {' | '.join(row)} |" for row in rows]
    print("\n" + "\n".join(table))
    if rows and stages:
        with open(f"{stages[0].root}/report.md", "w") as f:
            evals = eval_section(stages[0].root, [(s.name, s.output_dir) for s in stages])
            f.write(f"# nanoforge run {cfg.recipe}\n\n" + "\n".join(table) + "\n" + evals)
        where = {stage.name: stage.output_dir for stage in stages}
        page = write_run_report(
            stages[0].root,
            [(name, where[name], status) for name, status, *_ in rows],
            title=f"nanoforge run {cfg.recipe}",
        )
        print(f"\nrun report: {page} (open it in a browser)")
    if status:
        print(f"\nfix the error above and rerun `nanoforge run {cfg.recipe}`: finished stages are skipped.")
    return status


if __name__ == "__main__":
    sys.exit(main())
