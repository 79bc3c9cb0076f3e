"""Publish a finished artifact to the Hugging Face Hub, with a card generated from its manifest.

Local (no network, no token: writes exactly the files that would be uploaded, to inspect them):
    nanoforge publish runs/demo/curate --repo_id me/demo-documents --dry_run runs/demo/publish-preview
Hub (from any machine that sees the artifact directory, e.g. the cluster's head node):
    nanoforge publish runs/demo/curate --repo_id me/demo-documents [--private false] [--revision main]
Cluster (a Ray job, the artifact on shared or object storage):
    ray job submit --address http://HEAD:8265 -- nanoforge publish /shared/runs/curate --repo_id me/documents
    nanoforge publish s3://bucket/runs/curate --repo_id me/documents   # copied to a temporary folder first

ARTIFACT is the first, positional argument (`--artifact` or an `artifact:` YAML key work too). What goes up, in
one commit on branch `nf-<first 12 hex digits of the artifact hash>` (that hash combines the config hash with the
input hashes, so one config run over other inputs never lands on the same branch; `--revision` overrides, and
`--revision main` is what the Hub's dataset viewer shows):
  - a dataset artifact (documents, blend, traces, sft/preference/rl sets) into a dataset repo: every file of the
    artifact: Parquet shards (each directory of shards is a viewer config, see pipelines/core/cards.py),
    blend.json, Megatron .bin/.idx, stats and reports;
  - a checkpoint into a model repo, safetensors only: pickle files (*.bin, *.pt, *.pth, *.pkl, ...) and Trainer
    resume states (checkpoint-*/) are left out and listed, and a checkpoint with no *.safetensors is refused;
  - README.md, the card rendered from the manifest (it says what the upload holds and what was left out), and
    manifest.json with credentials redacted;
  - not `rejected/` and `quarantine/` (the full text of dropped documents and the raw input lines, which hold the
    personal data curate redacts from kept text): they stay local unless `--include_rejected`, and then every
    string in them goes through curate's PII redaction first;
  - never a symlink that points out of the artifact (refused);
  - and it deletes what else is on that revision (except .gitattributes), so it holds exactly this artifact.
A new repository is private unless `--private false` (changed: it used to be public by default).
The token comes from the usual places (HF_TOKEN, `hf auth login`); it is never printed or written anywhere.
HF_ENDPOINT or --endpoint points at another Hub. Publishing the same artifact again makes no new commit.
"""

from __future__ import annotations

import filecmp
import io
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.core import storage
from pipelines.core.artifacts import MANIFEST, read_manifest
from pipelines.core.cards import SIDE_CONFIGS, card_kind, redact, render_card
from pipelines.core.config import ConfigError, parse

PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib")  # never uploaded from any artifact
CHECKPOINT_PICKLES = (
    *PICKLE_SUFFIXES,
    ".bin",
)  # in a checkpoint, .bin is torch.save (pytorch_model.bin, training_args.bin)


@dataclass
class PublishConfig:
    artifact: str = field(
        default="", metadata={"help": "Artifact directory to publish (also the first positional argument)."}
    )
    repo_id: str = field(
        default="", metadata={"help": "Hub repository ORG/NAME (a dataset repo, or a model repo for checkpoints)."}
    )
    revision: str | None = field(
        default=None, metadata={"help": "Branch to commit to; default nf-<first 12 hex of the artifact hash>."}
    )
    private: bool = field(
        default=True, metadata={"help": "Create the repository as private (default; ignored if it exists)."}
    )
    include_rejected: bool = field(
        default=False,
        metadata={"help": "Also upload rejected/ and quarantine/, PII-redacted (default: left out: raw text)."},
    )
    dry_run: str | None = field(
        default=None,
        metadata={"help": "Write the files that would be uploaded into this directory instead; no network or token."},
    )
    license: str = field(
        default="other", metadata={"help": "Card license id (Hub license list, e.g. apache-2.0, cc-by-4.0, odc-by)."}
    )
    language: list[str] = field(default_factory=lambda: ["en"], metadata={"help": "Card language codes."})
    pretty_name: str | None = field(
        default=None, metadata={"help": "Card title; default '<name> (<kind>, nanoforge <stage>)'."}
    )
    endpoint: str | None = field(
        default=None, metadata={"help": "Hub URL; default $HF_ENDPOINT or https://huggingface.co."}
    )
    large_upload_files: int = field(
        default=10_000,
        metadata={"help": "From this many files, or large_upload_gb, upload in several resumable commits."},
    )
    large_upload_gb: float = field(default=50.0, metadata={"help": "See large_upload_files."})


def parse_args(argv: list[str] | None = None) -> PublishConfig:
    """Parse flags; a leading positional argument is the artifact directory (`publish DIR --repo_id ...`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-"):
        args = ["--artifact", args[0], *args[1:]]
    return parse(PublishConfig, argv=args)


def complete_manifest(path: Path) -> dict:
    """The manifest of the finished artifact at `path`, or a ConfigError saying what is wrong with it."""
    if not path.is_dir():
        partial = path.parent / f".{path.name}.partial"
        hint = f"; its stage left an unfinished {partial}: rerun the stage to finish it" if partial.exists() else ""
        raise ConfigError(f"artifact directory not found: {path}{hint}")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{path} has no {MANIFEST}: not a nanoforge artifact, or its stage has not finished"
        ) from None
    except ValueError as e:
        raise ConfigError(f"{path / MANIFEST} is not valid JSON ({e})") from None
    if manifest.get("status") != "complete":
        raise ConfigError(f"{path} is not complete (manifest status {manifest.get('status')!r}); rerun its stage")
    return manifest


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not repo_id:
        raise ConfigError("--repo_id ORG/NAME is required (the card's loading code names it, even in a dry run)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ConfigError(f"--repo_id {repo_id!r} is not a Hub repository id: {e}") from None
    if repo_id.count("/") != 1:
        raise ConfigError(f"--repo_id {repo_id!r}: expected ORG/NAME (a user or organisation, then the repo name)")


def artifact_files(path: Path, repo_type: str, include_rejected: bool = False) -> tuple[dict[str, Path], list[str]]:
    """Files to upload (path in repo -> local path) and files left out, with why. README/manifest are replaced."""
    files, skipped = {}, []
    root = path.resolve()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if any(part.startswith(".") for part in f.relative_to(path).parts) or rel in (MANIFEST, "README.md"):
            continue
        if not f.resolve().is_relative_to(root):  # a link would upload whatever it points at (~/.ssh, /etc, ...)
            raise ConfigError(
                f"{f} is a symlink to {f.resolve()}, outside the artifact {path}; publish uploads only the "
                "artifact's own files: replace the link by a copy or remove it"
            )
        if not include_rejected and side_folder(rel):
            skipped.append(f"{rel} (rejected/quarantined rows hold unredacted text: --include_rejected uploads them)")
        elif repo_type == "model" and rel.startswith("checkpoint-"):
            skipped.append(f"{rel} (Trainer resume state)")
        elif f.suffix in (CHECKPOINT_PICKLES if repo_type == "model" else PICKLE_SUFFIXES):
            skipped.append(f"{rel} (pickle: safetensors only)")
        else:
            files[rel] = f
    if repo_type == "model" and not any(rel.endswith(".safetensors") for rel in files):
        raise ConfigError(
            f"{path}: no *.safetensors weights; nanoforge publishes checkpoints as safetensors only "
            "(re-save with `model.save_pretrained(dir, safe_serialization=True)`)"
        )
    return files, skipped


def side_folder(rel: str) -> bool:
    """True for files under a `rejected/` or `quarantine/` folder (dropped rows, raw input lines)."""
    return any(part in SIDE_CONFIGS for part in rel.split("/")[:-1])


def redacted_parquet(path: Path) -> bytes:
    """The Parquet file at `path` with every string column passed through curate's PII redaction."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.curation.pii import redact_pii

    table = pq.read_table(path)
    for i, col in enumerate(table.schema):
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            values = [None if v is None else redact_pii(v)[0] for v in table.column(i).to_pylist()]
            table = table.set_column(i, col, pa.array(values, type=col.type))
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def same_files(out: Path, contents: dict[str, Path | bytes]) -> bool:
    """True when `out` holds exactly `contents`: the same file names and bytes, nothing else."""
    found = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() or p.is_symlink()}
    if found != set(contents):
        return False
    for rel, src in contents.items():
        dest = out / rel
        if isinstance(src, bytes):
            if dest.is_symlink() or dest.read_bytes() != src:
                return False
        elif dest.is_symlink() or not filecmp.cmp(src, dest, shallow=False):
            return False
    return True


def write_dry_run(out: Path, contents: dict[str, Path | bytes]) -> bool:
    """Write the preview into `out`; False when it already holds exactly these files (a rerun: nothing to do).

    A non-empty `out` is replaced only when it is an earlier preview (its manifest.json names an artifact kind);
    anything else there is refused, never deleted."""
    if out.exists() and any(out.iterdir()):
        if same_files(out, contents):
            return False
        try:
            ours = "kind" in json.loads((out / MANIFEST).read_text())
        except (OSError, ValueError, TypeError):
            ours = False
        if not ours:
            raise ConfigError(
                f"--dry_run directory {out} is not empty and is not a publish preview; give a new or empty directory"
            )
        shutil.rmtree(out)
    for rel, src in contents.items():
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            dest.write_bytes(src)
        else:  # a copy, not a link: editing the preview must never change the artifact
            shutil.copyfile(src, dest)
    return True


def stage_upload(staging: Path, contents: dict[str, Path | bytes]) -> None:
    """The upload as a folder for `upload_folder`: generated files written, artifact files hard-linked (a symlink
    across filesystems), never copied: a large artifact is not duplicated on disk."""
    import os

    for rel, src in contents.items():
        dest = staging / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        if isinstance(src, bytes):
            dest.write_bytes(src)
            continue
        try:
            os.link(src, dest)
        except OSError:
            dest.symlink_to(src.resolve())


def upload_large(api, cfg: PublishConfig, repo_type: str, revision: str, path: Path, contents: dict, message: str):
    """An artifact too large for one commit: `HfApi.upload_folder` (huggingface_hub 2's successor of
    `upload_large_folder`: with hf_xet it commits in batches and a rerun resumes). `delete_patterns="*"` removes what
    else is on the revision, as the one-commit path does. The staging folder stays after a failure, for the rerun."""
    staging = path.parent / f".{path.name}.publish-{revision}"
    stage_upload(staging, contents)
    commit = api.upload_folder(
        repo_id=cfg.repo_id,
        repo_type=repo_type,
        revision=revision,
        folder_path=staging,
        delete_patterns="*",
        commit_message=message,
    )
    shutil.rmtree(staging)
    return commit


def local_copy(url: str, root: Path) -> Path:
    """A complete artifact on object storage (s3://, gs://), copied under `root`: the Hub's upload reads local
    files, so the bytes pass through this machine either way. A prefix without a complete manifest is refused
    before anything is copied."""
    if read_manifest(url) is None:
        raise ConfigError(f"{url} has no complete {MANIFEST}: not a nanoforge artifact, or its stage has not finished")
    fs, prefix = storage.filesystem(url)
    dest = root / storage.basename(url)
    for f in fs.find(prefix):
        rel = f[len(prefix.rstrip("/")) + 1 :]
        if not any(part.startswith(".") for part in rel.split("/")):  # lock, lineage: not the artifact's
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f, str(dest / rel))
    return dest


def publish(cfg: PublishConfig, path: Path) -> int:
    """Preview or upload the artifact at the local `path`."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
    from huggingface_hub.errors import HTTPError  # the HTTP client's base error: refusals and unreachable Hubs

    manifest = complete_manifest(path)
    check_repo_id(cfg.repo_id)
    kind = card_kind(manifest["kind"])
    revision = cfg.revision or f"nf-{manifest['hash'][:12]}"
    token = get_token()
    if token is None and cfg.dry_run is None:
        raise ConfigError("no Hugging Face token: run `hf auth login` or set HF_TOKEN (or preview with --dry_run DIR)")
    secrets = (token,) if token else ()

    files, skipped = artifact_files(path, kind.repo_type, cfg.include_rejected)
    side = {rel: redacted_parquet(src) for rel, src in files.items() if side_folder(rel) and rel.endswith(".parquet")}
    unreadable = [rel for rel in files if side_folder(rel) and rel not in side]
    if unreadable:  # only Parquet can be redacted column by column; anything else there might leak
        raise ConfigError(f"--include_rejected: cannot redact {', '.join(unreadable)} (not Parquet); remove them")
    upload = {"private": cfg.private, "left_out": skipped, "redacted": sorted(side)}
    card = render_card(
        path,
        repo_id=cfg.repo_id,
        revision=revision,
        license=cfg.license,
        language=cfg.language,
        pretty_name=cfg.pretty_name,
        secrets=secrets,
        upload=upload,
    )
    public_manifest = json.dumps(redact(manifest, secrets), indent=2) + "\n"
    contents: dict[str, Path | bytes] = {
        "README.md": card.encode(),
        MANIFEST: public_manifest.encode(),
        **files,
        **side,
    }

    print(
        f"[publish] {manifest['kind']} {path} -> {kind.repo_type} repo {cfg.repo_id} @ {revision}: "
        f"{len(contents)} files"
    )
    for rel, src in list(contents.items())[:50]:
        print(f"  {rel}  ({len(src) if isinstance(src, bytes) else src.stat().st_size} bytes)")
    if len(contents) > 50:
        print(f"  ... and {len(contents) - 50} more")
    for why in skipped:
        print(f"  left out: {why}")
    if cfg.dry_run is not None:
        if write_dry_run(Path(cfg.dry_run), contents):
            print(f"[publish] dry run: wrote these files to {cfg.dry_run}; nothing was uploaded")
        else:
            print(f"[publish] dry run: {cfg.dry_run} already holds exactly these files; nothing to do")
        return 0

    api = HfApi(endpoint=cfg.endpoint, token=token)
    step = "create the repository"
    try:
        api.create_repo(cfg.repo_id, repo_type=kind.repo_type, private=cfg.private, exist_ok=True)
        if revision != "main":
            step = f"create branch {revision}"
            api.create_branch(cfg.repo_id, branch=revision, repo_type=kind.repo_type, exist_ok=True)
        step = "commit the files"
        message = f"nanoforge publish: {manifest['kind']} {manifest['name']} ({manifest['hash'][:12]})"
        size = sum(len(src) if isinstance(src, bytes) else src.stat().st_size for src in contents.values())
        if len(contents) >= cfg.large_upload_files or size >= cfg.large_upload_gb * 2**30:
            print(f"[publish] {len(contents)} files, {size / 2**30:.1f} GiB: uploading in several resumable commits")
            commit = upload_large(api, cfg, kind.repo_type, revision, path, contents, message)
            print(f"[publish] {commit.commit_url}")
            return 0
        # The revision ends up holding exactly this artifact: files an earlier publish left there (say a shard
        # that no longer exists) would otherwise be picked up by the card's `documents/*.parquet` globs.
        stale = [
            p
            for p in api.list_repo_files(cfg.repo_id, repo_type=kind.repo_type, revision=revision)
            if p not in contents and p != ".gitattributes"
        ]
        for p in stale:
            print(f"  removing from {revision}: {p}")
        commit = api.create_commit(
            cfg.repo_id,
            repo_type=kind.repo_type,
            revision=revision,
            operations=[CommitOperationDelete(p) for p in stale]
            + [CommitOperationAdd(rel, src if isinstance(src, bytes) else str(src)) for rel, src in contents.items()],
            commit_message=message,
            commit_description=(
                f"stage {manifest['stage']}, config_hash {manifest['config_hash']}, code "
                f"{manifest.get('code_version')}"
            ),
        )
    except (HTTPError, OSError) as e:  # OSError: offline mode (HF_HUB_OFFLINE=1), unreadable files
        raise ConfigError(f"could not {step} for {cfg.repo_id} at {api.endpoint}: {e}") from None
    print(f"[publish] {commit.commit_url}")
    if revision != "main":
        print(f"[publish] on branch {revision}; the Hub's viewer shows main: pass --revision main to publish there")
    return 0


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if not cfg.artifact:
        raise ConfigError("no artifact given: nanoforge publish ARTIFACT_DIR --repo_id ORG/NAME")
    if not storage.is_remote(cfg.artifact):
        return publish(cfg, Path(cfg.artifact))
    with tempfile.TemporaryDirectory(prefix="nanoforge-publish-") as tmp:
        return publish(cfg, local_copy(cfg.artifact, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
