"""Artifacts: directories with a `manifest.json`, written under a temporary name and renamed when complete.

Every stage writes its output through `Artifact`:

    art = Artifact(output_dir, kind="documents", stage="curate", config=to_dict(cfg), inputs=cfg.input_paths)
    if art.up_to_date() and not cfg.force:
        print(art.skip_message()); return art.path
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

Card. Before the rename, `README.md` is rendered from the manifest (dataset_cards/render.py), so the directory
is a Hugging Face dataset (or model) repository as written: `datasets.load_dataset(path)` reads the kept rows,
`load_dataset(path, "rejected")` the dropped ones, and `publish` uploads the same configs.
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
import subprocess
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pipelines import storage

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


# What identifies an object's version, by store: S3 ETag, GCS generation/etag, the Hub's blob id or LFS sha, else mtime.
VERSION_KEYS = ("ETag", "etag", "generation", "md5Hash", "blob_id", "sha256", "LastModified", "mtime", "updated",
                "last_modified", "created")  # fmt: skip


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
        """
        if self.remote:
            yield from self._writing_remote(resume)
            return
        start = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._prepare_partial(resume)
        yield self.partial
        (self.partial / ".lineage.json").unlink(missing_ok=True)
        tmp_manifest = self.partial / (MANIFEST + ".tmp")
        tmp_manifest.write_text(json.dumps(self.manifest(time.monotonic() - start), indent=2) + "\n")
        os.replace(tmp_manifest, self.partial / MANIFEST)
        # The card makes the directory a Hugging Face repo as written: its `configs:` are what load_dataset reads.
        from dataset_cards.render import write_card

        write_card(self.partial, local_path=self.path)
        if self.path.exists():  # an older artifact (other config/inputs, or --force): replace it
            trash = self.path.parent / f".{self.path.name}.old-{os.getpid()}"
            os.replace(self.path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(self.partial, self.path)

    def _writing_remote(self, resume: bool) -> Iterator[str]:
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
        storage.remove(stamp)
        storage.write_text(json.dumps(self.manifest(time.monotonic() - start), indent=2) + "\n", manifest)
