"""Run `curate` with kills planted in it, for test_curate_kill.py (a helper, not a test module).

    python tests/pipelines/curate_killer.py KILLS FLAG_DIR -- CURATE_ARGS...

KILLS, comma separated:
  worker       the Ray worker that gets the first chunk SIGKILLs itself before filtering it (once; FLAG_DIR/worker
               marks it): Ray must retry the task elsewhere and the run goes on
  exact_dedup | decontaminate | fuzzy_dedup | shards
               when that global step's first output block (or the first written shard) reaches the plan, a Ray
               task SIGKILLs the driver's whole process group (driver, raylet, workers), as `kill -9` of a job would;
               a step the driver computed itself (a table) is killed before its rejections are written
The wrappers are defined here, in __main__, so Ray ships them to the workers by value.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from pipelines import curate
from pipelines.curation import chunks


def kill_driver(batch, *, pgid: int):
    os.killpg(pgid, signal.SIGKILL)
    return batch


def main() -> None:
    kills, flags = set(sys.argv[1].split(",")), Path(sys.argv[2])
    argv = sys.argv[sys.argv.index("--") + 1 :]
    die = {"fn_kwargs": {"pgid": os.getpgid(0)}}
    steps, shard_pass, filter_chunks = curate.global_steps, curate.shard_pass, chunks.filter_chunks

    def killing(fn):
        def step(files, cfg):
            out = fn(files, cfg)
            if not hasattr(out, "map_batches"):  # a table the driver computed (exact dedup of a small input)
                kill_driver(None, pgid=die["fn_kwargs"]["pgid"])
            return out.map_batches(kill_driver, **die)

        return step

    def global_steps(cfg):
        return [(name, killing(fn) if name in kills else fn) for name, fn in steps(cfg)]

    def filter_or_die(batch, **kwargs):
        if not (flags / "worker").exists():
            (flags / "worker").touch()
            os.kill(os.getpid(), signal.SIGKILL)  # this Ray worker process dies before the chunk is written
        return filter_chunks(batch, **kwargs)

    curate.global_steps = global_steps
    if "worker" in kills:
        chunks.filter_chunks = filter_or_die
    if "shards" in kills:
        curate.shard_pass = lambda *a: shard_pass(*a).map_batches(kill_driver, **die)
    curate.main(argv)


if __name__ == "__main__":
    main()
