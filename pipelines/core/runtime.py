"""Where Ray runs, chosen at the edge: embedded local Ray by default, a cluster when an address is given.

    with ray_session(cfg.address):
        build_pipeline(cfg).write_parquet(...)

`address` (or the `RAY_ADDRESS` environment variable, which a Ray job sets for its entrypoint) attaches to a
running cluster. Without one, Ray starts inside this process sized to the machine, with no dashboard and
quiet logs; it is shut down when the block exits. A Ray that is already initialised is reused and left
running.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from pipelines.core.config import ConfigError

log = logging.getLogger(__name__)


def progress_enabled() -> bool:
    """Ray Data's progress: bars in a terminal, a line a minute in a job log, none in CI (`CI` set, as GitHub
    Actions and most CI services do) or with NANOFORGE_PROGRESS=0; NANOFORGE_PROGRESS=1 forces it on."""
    setting = os.environ.get("NANOFORGE_PROGRESS")
    if setting is not None:
        return setting != "0"
    return os.environ.get("CI", "").lower() in ("", "0", "false")


_LOCAL_RUNTIME = False  # this process started a one-node Ray of its own: its CPUs are all there will be


def init_ray(address: str | None = None, num_cpus: int | None = None, worker_logs: bool = False) -> bool:
    """Start or attach Ray. Returns True when this call started it (and so should shut it down).

    Attached to a cluster, the workers' output reaches this process (and the job's log); on a local Ray only with
    `worker_logs`, which the stages ask for where a worker's log is the run's progress (a vLLM engine's start and its
    tokens/s), and leave off elsewhere (Ray Data's workers' warnings would bury the stage's own lines)."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Without a terminal (a job log, `make demo > log`) Ray Data logs every operator's progress every 10 s; once a
    # minute keeps long runs visible without burying the stage's own output
    os.environ.setdefault("RAY_DATA_NON_TTY_PROGRESS_LOG_INTERVAL", "60")
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    else:
        # Ray gives its node 30 s to come up, which a loaded machine can miss; wait longer, and retry once
        os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
        kwargs = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": worker_logs}
        for attempt in (1, 2):
            try:
                # address="local": always a new Ray; without it ray.init() joins any cluster `ray start` (or a test's
                # ray.cluster_utils.Cluster) left running on this machine, e.g. another user's
                ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), configure_logging=True, **kwargs)
                global _LOCAL_RUNTIME
                _LOCAL_RUNTIME = True
                break
            except Exception as e:  # Ray raises plain Exception/RuntimeError for a node that timed out
                ray.shutdown()
                if attempt == 2:
                    raise
                log.warning("local Ray did not start (%s); retrying once", str(e).splitlines()[0][:200])
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress_enabled()
    ctx.print_on_execution_start = False
    return True


def check_actor_cpus(actors: int, cpus_each: float, fields: str) -> None:
    """Refuse an actor pool that a local Ray cannot place at all: Ray Data would wait for CPUs forever, without an
    error. (On a cluster, more nodes may come: nothing is checked there.)"""
    import ray

    if not _LOCAL_RUNTIME or not ray.is_initialized():
        return
    total = ray.cluster_resources().get("CPU", 0)
    if actors * cpus_each > total:
        raise ConfigError(
            f"{fields}: {actors} x {cpus_each:g} CPUs for the model actors is more than the {total:g} CPUs of this "
            "machine's Ray (the run would wait forever); lower them"
        )


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, worker_logs: bool = False) -> Iterator[None]:
    """`init_ray` for the duration of a block; shuts Ray down only if this block started it."""
    import ray

    started = init_ray(address, num_cpus, worker_logs)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def read_files(files: list[str], columns: list[str] | None = None):
    """The rows of Parquet or JSON-lines `files` (local or object storage), file by file in the order given, as a Ray
    dataset read by zero-CPU tasks, one file each.

    For stages whose model actors may hold every CPU: Ray Data's own readers start with a one-CPU ListFiles task,
    which then waits forever (2 workers x 1 CPU on a 2-CPU node hung before reading a row). Reading is light and
    paced by generation. A file that cannot be read is named in the error."""
    import pyarrow as pa
    import ray

    from pipelines.core import storage

    def read(batch: pa.Table) -> pa.Table:
        path = batch["path"][0].as_py()
        try:
            if path.endswith(".parquet"):
                return storage.read_table(path, columns)
            table = storage.read_json_lines(path)
            return table.select(columns) if columns else table
        except (OSError, ValueError, KeyError, pa.ArrowException) as e:
            from pipelines.core.datasets import find_broken_line

            where = find_broken_line([path]) or f"{path}: {e}"
            raise ConfigError(f"cannot read {storage.redact(where)}") from e

    items = ray.data.from_items([{"path": f} for f in files], override_num_blocks=max(1, len(files)))
    return items.map_batches(read, batch_size=1, batch_format="pyarrow", num_cpus=0)
