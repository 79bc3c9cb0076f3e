"""Stall diagnosis for benchmarks/gpu: with NF_STACKDUMP_S=N on the path, every Python process (vLLM's engine
core too, forked or spawned) dumps all its threads' stacks every N seconds to $NF_STACKDUMP_DIR/stacks.<pid>.txt.

A daemon thread calls `faulthandler.dump_traceback`, not `faulthandler.dump_traceback_later`: re-arming the
latter in a forked child waits forever for the parent's watchdog thread, which does not exist in the child. That
hung vLLM's forked engine core before its first log line and was the "NemotronH stall" of phases A, B and E
(the engine started in 47 s without this hook). The thread cannot dump while another thread holds the GIL in C.
"""

import faulthandler
import os
import threading
import time

_every = os.environ.get("NF_STACKDUMP_S")


def _arm() -> None:
    folder = os.environ.get("NF_STACKDUMP_DIR", "/tmp")
    os.makedirs(folder, exist_ok=True)
    out = open(os.path.join(folder, f"stacks.{os.getpid()}.txt"), "w")  # noqa: SIM115 (lives as long as the process)

    def dump() -> None:
        while True:
            time.sleep(float(_every))
            out.write(f"--- {time.strftime('%H:%M:%S')}\n")
            out.flush()
            faulthandler.dump_traceback(file=out, all_threads=True)

    threading.Thread(target=dump, name="nf-stackdump", daemon=True).start()


if _every:
    _arm()
    os.register_at_fork(after_in_child=_arm)
