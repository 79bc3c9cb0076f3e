"""Run a training stage (sft, dpo, grpo, distill) on N processes, with the stage's own `main` in every rank.

Local:    nanoforge sft --config sft/configs/sft_demo.yaml --num_processes 2                 # accelerate, one node
Cluster:  nanoforge sft --config sft/configs/sft_nano2_12b.yaml --num_processes 16 --launcher ray   # Ray Train

- `accelerate` (default): N ranks on this node (torchrun, as `accelerate launch --multi_gpu` does), each building
  its accelerator from the environment. FSDP2 comes from the stage's own config (`fsdp: true`,
  `fsdp_config: {version: 2, ...}`), which the Trainer hands to accelerate; without GPUs the ranks use gloo.
- `ray`: a Ray Train `TorchTrainer` with N workers (one GPU each where the cluster has GPUs) on the cluster that
  `RAY_ADDRESS` names (or a local Ray); Ray Train sets up the process group and the Trainer finds it. This is what
  `nanoforge submit` uses for a recipe stage with `num_workers`.

Either way only rank 0 writes the artifact (manifest, card, eval), every rank trains into the same partial
directory, and a rerun resumes from its last complete checkpoint, as on one process.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys

from pipelines.core.commands import COMMANDS, TRAINING_COMMANDS

log = logging.getLogger(__name__)

# commands whose stage runs under a launcher: command -> module
TRAINING_STAGES = {name: COMMANDS[name][0] for name in TRAINING_COMMANDS}
LAUNCHERS = ("accelerate", "ray")


def pop_launch_args(argv: list[str]) -> tuple[int, str, list[str]]:
    """`--num_processes N` and `--launcher accelerate|ray` (anywhere in argv) and the argv without them."""
    values = {"--num_processes": "1", "--launcher": "accelerate"}
    rest, i = [], 0
    while i < len(argv):
        key, _, inline = argv[i].partition("=")
        if key in values and (inline or i + 1 < len(argv)):
            values[key] = inline or argv[i + 1]
            i += 1 if inline else 2
        else:
            rest.append(argv[i])
            i += 1
    if not values["--num_processes"].isdigit() or int(values["--num_processes"]) < 1:
        raise ValueError(f"--num_processes must be a positive integer; got {values['--num_processes']!r}")
    if values["--launcher"] not in LAUNCHERS:
        raise ValueError(f"--launcher must be one of {', '.join(LAUNCHERS)}; got {values['--launcher']!r}")
    return int(values["--num_processes"]), values["--launcher"], rest


def launch(module: str, argv: list[str], num_processes: int = 1, launcher: str = "accelerate") -> int:
    """Run `module.main(argv)` here (one process, or already inside a launched rank) or on `num_processes` ranks."""
    if "WORLD_SIZE" in os.environ or (num_processes == 1 and not wants_fsdp(argv)):
        return importlib.import_module(module).main(argv) or 0
    if launcher == "ray":
        return ray_train(module, argv, num_processes)
    return accelerate_launch(module, argv, num_processes)


def wants_fsdp(argv: list[str]) -> bool:
    """Whether the stage will shard with FSDP (`--fsdp` on the command line, else `fsdp:` in its `--config`): the
    Trainer refuses FSDP outside a process group, so even one rank then goes through the launcher."""
    import yaml

    def value(name: str):
        for i, arg in enumerate(argv):
            key, eq, inline = arg.partition("=")
            if key == f"--{name}":
                if eq:
                    return inline
                given = i + 1 < len(argv) and not argv[i + 1].startswith("--")
                return argv[i + 1] if given else "true"
        return None

    fsdp = value("fsdp")
    if fsdp is None and (config := value("config")) and os.path.isfile(config):
        with open(config) as f:
            fsdp = (yaml.safe_load(f) or {}).get("fsdp")
    return str(fsdp).strip().lower() not in ("", "none", "null", "false", "0", "no")


def accelerate_launch(module: str, argv: list[str], num_processes: int) -> int:
    """N ranks of the stage on this node through torchrun (what `accelerate launch --multi_gpu` runs too; its own
    CPU multi-process path needs mpirun). Each rank's Trainer builds its accelerator from the environment torchrun
    sets: NCCL on GPUs, gloo on CPUs, FSDP2 from the stage's `fsdp_config`."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(num_processes),
        "-m",
        module,
        *argv,
    ]
    import torch

    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "true"  # accelerate counts CPU ranks as distributed (gloo) only when told
    log.info("launching %d ranks: %s", num_processes, " ".join(cmd))
    return subprocess.run(cmd, check=False, env=env).returncode


def _ray_worker(config: dict) -> None:
    """One Ray Train worker: the stage's own main, in the driver's working directory (relative config paths)."""
    os.chdir(config["cwd"])
    if not config["use_gpu"]:
        os.environ["ACCELERATE_USE_CPU"] = "true"  # see accelerate_launch
    code = importlib.import_module(config["module"]).main(config["argv"]) or 0
    if code:
        raise RuntimeError(f"{config['module']} exited with {code} on rank {os.environ.get('RANK')}")


def ray_train(module: str, argv: list[str], num_workers: int) -> int:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.core.runtime import ray_session

    with ray_session(os.environ.get("RAY_ADDRESS")):
        use_gpu = ray.cluster_resources().get("GPU", 0) >= num_workers
        trainer = TorchTrainer(
            _ray_worker,
            train_loop_config={"module": module, "argv": list(argv), "cwd": os.getcwd(), "use_gpu": use_gpu},
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
            run_config=RunConfig(name=f"nanoforge-{module.rsplit('.', 1)[-1]}"),
        )
        log.info("Ray Train: %d workers (%s)", num_workers, "GPU" if use_gpu else "CPU, gloo")
        trainer.fit()
    return 0
