"""Artifacts: directories with a `manifest.json`, written under a temporary name and renamed when complete.

Every stage writes its output through `Artifact`:

    art = Artifact(output_dir, kind="documents", stage="curate", config=to_dict(cfg), inputs=cfg.input_paths)
    if art.up_to_date() and not cfg.force:
        log.info(art.skip_message()); return art.path
    with art.writing() as tmp:          # tmp: Path of the partial directory
        ...write files under tmp...
        art.counts = {"input": n, "kept": k}
    # now art.path/manifest.json exists with status "complete"

Identity. `config_hash` is sha256 of the canonical JSON of the config without the fields that do not change
the output (`output_dir`, `force`, `address`, worker counts...). Each input contributes a cheap hash, so
that checking a terabyte input costs a few `stat` calls, never a read of the data:
  - an upstream artifact (a directory with a complete `manifest.json`): that manifest's `hash`;
  - a raw local file: sha256 of (absolute path, size, mtime_ns);
  - a raw local directory: the same over every file below it (stat only);
  - a remote URL (`s3://`, `gs://`, `hf://`, ...): the same over the object(s) it names, from the store's
    listing (URL, size, and ETag / generation / blob id, else the modification time); a store that cannot be
    reached (offline) falls back to the URL string, with a warning.
The artifact's own `hash` combines the kind, `config_hash`, the input hashes and the code version (`code_version`),
so an upgrade of nanoforge reruns stages instead of reusing outputs an older version wrote; downstream stages use
it as theirs.

Safety. An existing directory at the output path is replaced only when it is a nanoforge artifact (it has a
`manifest.json` with a `kind`) or empty; a directory holding anything else, or an output that is or contains one
of the stage's inputs, is refused before any work (`UnsafeOutputError`). While a stage writes, it holds an
exclusive lock `<parent>/.<name>.lock` (JSON: host, pid, started_at): a second run on the same output fails at
once naming the holder (`OutputLockedError`); a lock left by a dead process on this host is taken over. On an object
store the lock is a lease object at the same place (pipelines/core/locks.py: created with a conditional PUT, renewed
while the stage runs, taken over once expired).

Object storage (`s3://`, `gs://`): there is no rename, so the stage writes straight under the artifact's prefix and
the manifest is written last, as the commit marker; a prefix without a complete manifest is absent to every reader.
The prefix records the hash it was started for in `.lineage.json` (removed at commit); a rerun of the same hash
resumes from what is there, any other run first deletes the old manifest (uncommit), then the prefix. A prefix
holding objects but neither a manifest nor a `.lineage.json` is not ours and is never deleted.

Crash safety (local disk). Work happens in `<parent>/.<name>.partial/`, which survives a crash so a stage may resume
from what it wrote there (stages that checkpoint say so). The partial directory records the hash it was
started for; a partial directory from a different config or input is wiped, never mixed in. Only after the
manifest is written is the partial directory renamed to its final name, so a half-written artifact never
looks complete.

Card. Before the rename, `README.md` is rendered from the manifest (pipelines/core/cards.py), so the directory
is a Hugging Face dataset (or model) repository as written: `datasets.load_dataset(path)` reads the kept rows,
`load_dataset(path, "rejected")` the dropped ones, and `publish` uploads the same configs.

Length (~440 lines): the commit protocol (partial name, output lock, refusal of foreign outputs, manifest last on
object storage) and the hash that decides reruns belong together. Next split: read_manifest/input_hash into a
lower module, which also ends the lazy artifacts <-> cards import.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pipelines.core import storage
from pipelines.core.locks import LeaseLock, OutputLockedError, _pid_alive

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
# Config fields that choose where or how fast a stage runs, not what it produces.
NON_SEMANTIC_FIELDS = frozenset(
    {"output_dir", "force", "address", "num_workers", "num_cpus", "progress", "logging_dir", "overwrite_output_dir"}
)
PACKAGES = ("nanoforge", "ray", "datatrove", "trl", "transformers", "torch", "datasets", "pyarrow", "vllm")


def _sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: dict[str, Any], ignore: Iterable[str] = NON_SEMANTIC_FIELDS) -> str:
    ignore = set(ignore)
    return _sha(canonical_json({k: v for k, v in config.items() if k not in ignore}))


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The manifest of a complete artifact at `path`, or None."""
    try:
        manifest = json.loads(storage.read_text(storage.join(path, MANIFEST)))
    except (OSError, ValueError):
        return None
    return manifest if manifest.get("status") == "complete" else None


def input_hash(path: str | Path) -> str:
    """Cheap identity of an input (see the module docstring for what each kind of input contributes)."""
    path = str(path)
    manifest = read_manifest(path)
    if manifest is not None:
        return manifest["hash"]
    if storage.is_remote(path):
        return _remote_hash(path)
    matches = sorted(glob.glob(path, recursive=True)) if glob.has_magic(path) else [path]
    parts = []
    for match in matches:
        p = Path(match)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            st = f.stat()
            parts.append(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    if not parts:
        raise FileNotFoundError(f"input not found: {path}")
    return _sha("\n".join(parts))


class UnsafeOutputError(ValueError):
    """The output path holds something that is not ours to replace, or overlaps an input."""


def _norm(path: str | Path) -> str:
    """A comparable form of a path: URLs as written (without a trailing '/'), local paths absolute and resolved."""
    if storage.is_remote(path):
        return str(path).rstrip("/")
    return os.path.realpath(storage.local_path(path))


def _is_within(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def check_output(path: str | Path, inputs: Iterable[str | Path] = ()) -> None:
    """Refuse (UnsafeOutputError) an output that is or contains an input, or an existing non-artifact directory."""
    out = _norm(path)
    for given in inputs:
        given = str(given)
        local = not storage.is_remote(given)
        matches = sorted(glob.glob(given, recursive=True)) if local and glob.has_magic(given) else [given]
        for match in matches:
            if _is_within(_norm(match), out):
                raise UnsafeOutputError(
                    f"output {path} is or contains the stage's input {given}; writing it would destroy the input. "
                    "Choose another --output_dir."
                )
    if storage.is_remote(path):  # a foreign prefix is refused where it is written (`_writing_remote`)
        return
    target = Path(storage.local_path(path))
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir():
        raise UnsafeOutputError(f"output {path} exists and is not a directory; choose another --output_dir")
    try:
        ours = "kind" in json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError, TypeError):
        ours = False
    entries = sorted(p.name for p in target.iterdir())
    if not ours and entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise UnsafeOutputError(
            f"output {path} exists and is not a nanoforge artifact (no {MANIFEST}); it holds {len(entries)} "
            f"entries ({shown}). Nothing was changed: choose another --output_dir, or move that directory away."
        )


def acquire_lock(lock: Path, what: str) -> dict[str, Any]:
    """Create `lock` exclusively with this host and pid; take over a lock whose process on this host is dead.

    Raises OutputLockedError naming the holder when another live process (or one on another host) holds it."""
    mine = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text())
            except FileNotFoundError:
                continue  # released meanwhile: try again
            except (OSError, ValueError):
                holder = {}
            pid = holder.get("pid")
            if holder.get("host") != mine["host"] or not isinstance(pid, int) or _pid_alive(pid):
                raise OutputLockedError(
                    f"{what} is being written by pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
                    f"(since {holder.get('started_at', '?')}; lock {lock}). Wait for that run to finish; if "
                    f"it is gone (another host, or a crash), delete {lock} and rerun."
                ) from None
            # the holder died: move its lock aside (rename is atomic, so only one taker succeeds) and retry
            stale = lock.with_name(f"{lock.name}.stale-{os.getpid()}")
            try:
                os.replace(lock, stale)
            except FileNotFoundError:
                continue
            if json.loads(stale.read_text() or "{}") != holder:  # another taker's fresh lock: put it back
                os.replace(stale, lock)
                continue
            stale.unlink()
            print(f"[lock] took over {lock}: its holder, pid {pid} on this host, is no longer running")
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(mine))
        return mine
    raise OutputLockedError(f"{what}: could not take the lock {lock}; another run is starting on the same output")


def release_lock(lock: Path, mine: dict[str, Any]) -> None:
    """Remove `lock` if it is still the one `acquire_lock` wrote."""
    try:
        if json.loads(lock.read_text()) == mine:
            lock.unlink()
    except (OSError, ValueError):
        pass


# What identifies an object's version, by store: S3 ETag, GCS generation/etag, the Hub's blob id or LFS sha,
# else mtime.
VERSION_KEYS = (
    "ETag",
    "etag",
    "generation",
    "md5Hash",
    "blob_id",
    "sha256",
    "LastModified",
    "mtime",
    "updated",
    "last_modified",
    "created",
)


def _remote_hash(url: str) -> str:
    """sha256 over (name, size, version) of every object `url` names: one object, a prefix, or a glob."""
    try:
        fs, p = storage.filesystem(url)
        if glob.has_magic(p):
            found = fs.glob(p, detail=True)
        else:
            info = fs.info(p)
            found = fs.find(p, detail=True) if info.get("type") == "directory" else {p: info}
    except Exception as e:  # offline, no credentials, missing extra: identity by name only, said out loud
        log.warning("could not list %s (%s); its hash covers the URL only", storage.redact(url), e)
        return _sha(f"url:{url}")
    parts = []
    for name, info in sorted(found.items()):
        if info.get("type") == "directory":
            continue
        version = next((str(info[k]) for k in VERSION_KEYS if info.get(k) is not None), "")
        if not version and isinstance(info.get("lfs"), dict):
            version = str(info["lfs"].get("sha256"))
        parts.append(f"{name}:{info.get('size')}:{version}")
    if not parts:
        raise FileNotFoundError(f"input not found: {storage.redact(url)}")
    return _sha("url:" + "\n".join(parts))


@functools.lru_cache(maxsize=1)  # one `git describe` per process
def code_version() -> str:
    """`git describe` of the checkout this code runs from (with -dirty), else the installed version."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return "git:" + out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "nanoforge==" + _version("nanoforge")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


class Artifact:
    """One stage output directory; see the module docstring."""

    def __init__(
        self,
        path: str | Path,
        *,
        kind: str,
        stage: str,
        config: dict[str, Any],
        inputs: Iterable[str | Path] = (),
        ignore: Iterable[str] = NON_SEMANTIC_FIELDS,
    ):
        self.remote = storage.is_remote(path)
        self.path: Path | str = str(path).rstrip("/") if self.remote else Path(path)
        self.kind = kind
        self.stage = stage
        self.config = config
        self.config_hash = config_hash(config, ignore)
        self.inputs = [{"path": storage.redact(p), "hash": input_hash(p)} for p in inputs]
        self.code_version = code_version()
        self.hash = _sha(
            canonical_json([self.kind, self.config_hash, [i["hash"] for i in self.inputs], self.code_version])
        )
        self.partial = self.path if self.remote else self.path.parent / f".{self.path.name}.partial"
        self.lock = (
            storage.join(self.path.rsplit("/", 1)[0], f".{storage.basename(self.path)}.lock")
            if self.remote
            else self.path.parent / f".{self.path.name}.lock"
        )
        self.counts: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}  # more manifest fields a stage wants to record

    def existing(self) -> dict[str, Any] | None:
        return read_manifest(self.path)

    def up_to_date(self) -> bool:
        """True when a complete artifact made from the same config and inputs is already at `path`."""
        manifest = self.existing()
        return manifest is not None and manifest.get("hash") == self.hash

    def skip_message(self) -> str:
        return f"[{self.stage}] {self.path} is up to date (hash {self.hash[:12]}); skipping. Pass --force to rerun."

    def manifest(self, duration_s: float) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": storage.basename(self.path),
            "stage": self.stage,
            "config": self.config,
            "config_hash": self.config_hash,
            "inputs": self.inputs,
            "hash": self.hash,
            "counts": self.counts,
            **self.extra,
            "code_version": self.code_version,
            "packages": {name: v for name in PACKAGES if (v := _version(name))},
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": round(duration_s, 3),
            "status": "complete",
        }

    def _prepare_partial(self, resume: bool) -> None:
        stamp = self.partial / ".lineage.json"
        if self.partial.exists():
            try:
                same = json.loads(stamp.read_text()).get("hash") == self.hash
            except (OSError, ValueError):
                same = False
            if not (resume and same):
                shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"hash": self.hash, "stage": self.stage}))

    @contextlib.contextmanager
    def writing(self, resume: bool = True) -> Iterator[Path]:
        """Yield the partial directory; on success write the manifest and move it into place.

        With `resume`, a partial directory left by an interrupted run of the same hash is kept so the stage can
        pick up its finished pieces; otherwise it starts empty. On an exception the partial directory stays.
        A local output is checked (`check_output`) and locked (`acquire_lock`) for the whole block.
        """
        if self.remote:
            check_output(self.path, [i["path"] for i in self.inputs])
            lease = LeaseLock(self.lock, f"output {self.path}").acquire()
            try:
                yield from self._writing_remote(resume, lease)
            finally:
                lease.release()
            return
        start = time.monotonic()
        check_output(self.path, [i["path"] for i in self.inputs])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = acquire_lock(self.lock, f"output {self.path}")
        try:
            check_output(self.path)  # again under the lock: a run that finished meanwhile left only an artifact
            self._prepare_partial(resume)
            yield self.partial
            self._commit(start)
        finally:
            release_lock(self.lock, mine)

    def _commit(self, start: float) -> None:
        """Write the manifest and card into the partial directory and move it into place (replacing an older
        artifact, which `check_output` made sure is ours)."""
        (self.partial / ".lineage.json").unlink(missing_ok=True)
        tmp_manifest = self.partial / (MANIFEST + ".tmp")
        tmp_manifest.write_text(json.dumps(self.manifest(time.monotonic() - start), indent=2) + "\n")
        os.replace(tmp_manifest, self.partial / MANIFEST)
        # The card makes the directory a Hugging Face repo as written: its `configs:` are what load_dataset reads.
        from pipelines.core.cards import write_card

        write_card(self.partial, local_path=self.path)
        if self.path.exists():  # an older artifact (other config/inputs, or --force): replace it
            trash = self.path.parent / f".{self.path.name}.old-{os.getpid()}"
            os.replace(self.path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(self.partial, self.path)

    def _writing_remote(self, resume: bool, lease: LeaseLock) -> Iterator[str]:
        """`writing` on an object store: the prefix itself is the work area, the manifest the commit marker."""
        start = time.monotonic()
        stamp, manifest = storage.join(self.path, ".lineage.json"), storage.join(self.path, MANIFEST)
        try:
            same = storage.read_json(stamp).get("hash") == self.hash
        except (OSError, ValueError):
            same = False
        if not (resume and same):
            has_objects = bool(storage.glob(storage.join(self.path, "*")))
            if has_objects and not storage.exists(manifest) and not storage.exists(stamp):
                raise FileExistsError(f"{self.path} holds objects that are not a nanoforge artifact; not replacing it")
            storage.remove(manifest)  # uncommit first: a crash below leaves an absent artifact, never a wrong one
            storage.remove(self.path)
        storage.write_json({"hash": self.hash, "stage": self.stage}, stamp)
        yield self.path
        committed = self.manifest(time.monotonic() - start)
        from pipelines.core.cards import write_card  # the card goes up before the manifest, the commit marker

        write_card(self.path, local_path=self.path, manifest=committed)
        lease.check()  # a run that lost its lease (paused past expiry) must not commit over its successor
        storage.write_text(json.dumps(committed, indent=2) + "\n", manifest)
        storage.remove(stamp)  # after the commit: a crash between the two leaves a complete artifact
