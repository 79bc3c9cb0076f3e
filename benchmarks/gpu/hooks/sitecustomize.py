"""Stall diagnosis for benchmarks/gpu: with NF_STACKDUMP_S=N on the path, every Python process (vLLM's engine
core too, forked or spawned) dumps all its threads' stacks every N seconds to $NF_STACKDUMP_DIR/stacks.<pid>.txt."""

import faulthandler
import os

_every = os.environ.get("NF_STACKDUMP_S")


def _arm() -> None:
    folder = os.environ.get("NF_STACKDUMP_DIR", "/tmp")
    os.makedirs(folder, exist_ok=True)
    out = open(os.path.join(folder, f"stacks.{os.getpid()}.txt"), "w")  # noqa: SIM115 (lives as long as the process)
    faulthandler.dump_traceback_later(float(_every), repeat=True, file=out)


if _every:
    _arm()
    os.register_at_fork(after_in_child=_arm)
