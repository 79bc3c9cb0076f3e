"""`nanoforge publish` against a real HTTP server on 127.0.0.1 that speaks the Hub API `HfApi` uses.

The Hub is unreachable here, so `LocalHub` implements just what `create_repo`, `create_branch` and
`create_commit` request (validate-yaml, preupload, the git-LFS batch API with its PUT and verify, and the
NDJSON commit endpoint; read from huggingface_hub 2.4's `hf_api.py`, `_commit_api.py` and `lfs.py`), keeping
repositories, branches and file contents in memory. Like the Hub it sends binary files (Parquet, safetensors)
through LFS and text files inline. huggingface_hub prefers the Xet protocol when `hf_xet` is installed, which
needs a content-addressed storage server; the tests switch it off (`HF_HUB_DISABLE_XET`), so uploads take the
git-LFS path, which the real Hub still serves.

Length (~440 lines): most of it is `LocalHub`, the stand-in Hub server, which has to live beside the tests that
drive it; the tests themselves are short.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq
import pytest
import yaml
from artifact_factory import HF_TOKEN, checkpoint, documents, raw_shard, sft, traces

from pipelines import publish
from pipelines.core.artifacts import read_manifest
from pipelines.core.config import ConfigError

LFS_SUFFIXES = (
    ".parquet",
    ".safetensors",
    ".bin",
    ".idx",
    ".png",
)  # what the Hub's default .gitattributes routes to LFS


class LocalHub(ThreadingHTTPServer):
    """In-memory Hub: repos[(type, id)] = {"branches": {name: {path: bytes}}, "commits": [...], "visibility": ...}."""

    def __init__(self, token: str):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.token, self.repos, self.lfs, self.bodies, self.lock = token, {}, {}, [], threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: LocalHub

    def log_message(self, *args):  # keep test output quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while size := int(self.rfile.readline().strip(), 16):
                out += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return out
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload: dict | list) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _repo(self, types: str, repo_id: str):
        return self.server.repos.get((types.rstrip("s"), repo_id))

    def do_GET(self):  # repo_info (revision) and list_repo_files (tree, recursive, one page)
        m = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)/(revision|tree)/([^/?]+)", self.path.split("?")[0])
        repo = m and self._repo(m[1], m[2])
        if not repo or m[4] not in repo["branches"]:
            return self._send(404, {"error": "Repository or revision not found"})
        if m[3] == "revision":
            return self._send(200, {"id": m[2], "sha": repo["heads"][m[4]]})
        files = repo["branches"][m[4]]
        self._send(200, [{"type": "file", "path": p, "size": len(b), "oid": _git_sha1(b)} for p, b in files.items()])

    def do_PUT(self):  # the LFS "basic" transfer: the storage URL the batch API handed out (no auth, like S3)
        oid, body = self.path.rsplit("/", 1)[1], self._body()
        if hashlib.sha256(body).hexdigest() != oid:
            return self._send(400, {"error": "sha256 mismatch"})
        self.server.lfs[oid] = body
        self._send(200, {})

    def do_POST(self):
        body, path = self._body(), self.path.split("?")[0]
        self.server.bodies.append(body)
        if path.startswith("/lfs-verify"):
            info = json.loads(body)
            ok = len(self.server.lfs.get(info["oid"], b"")) == info["size"]
            return self._send(200 if ok else 404, {})
        if self.headers.get("authorization") != f"Bearer {self.server.token}":
            return self._send(401, {"error": "Invalid credentials in Authorization header"})
        with self.server.lock:
            if path == "/api/validate-yaml":
                return self._validate_yaml(json.loads(body))
            if path == "/api/repos/create":
                return self._create_repo(json.loads(body))
            if m := re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch", path):
                return self._lfs_batch(json.loads(body))
            m = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)/(branch|preupload|commit)/([^/]+)", path)
            repo = m and self._repo(m[1], m[2])
            if not repo:
                return self._send(404, {"error": "Repository not found"})
            return getattr(self, f"_{m[3]}")(repo, m[1], m[2], m[4], body)

    def _validate_yaml(self, payload: dict) -> None:
        front = payload["content"].split("---\n")[1]
        meta = yaml.safe_load(front)
        errors = [] if isinstance(meta, dict) else [{"message": "metadata must be a mapping"}]
        self._send(400 if errors else 200, {"errors": errors, "warnings": []})

    def _create_repo(self, payload: dict) -> None:
        key = (payload.get("type") or "model", f"{payload['organization']}/{payload['name']}")
        prefix = "" if key[0] == "model" else f"{key[0]}s/"
        if key in self.server.repos:
            return self._send(
                409, {"error": "You already created this repo", "url": f"{self.server.url}/{prefix}{key[1]}"}
            )
        files = {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"}
        self.server.repos[key] = {
            "branches": {"main": files},
            "heads": {"main": "0" * 40},
            "commits": [],
            "visibility": payload.get("visibility"),
        }
        self._send(200, {"url": f"{self.server.url}/{prefix}{key[1]}"})

    def _branch(self, repo: dict, types: str, repo_id: str, branch: str, body: bytes) -> None:
        if branch in repo["branches"]:
            return self._send(409, {"error": "Reference already exists"})
        start = (json.loads(body or b"{}")).get("startingPoint", "main")
        repo["branches"][branch], repo["heads"][branch] = dict(repo["branches"][start]), repo["heads"][start]
        self._send(200, {})

    def _preupload(self, repo: dict, types: str, repo_id: str, rev: str, body: bytes) -> None:
        current = repo["branches"].get(rev, {})
        out = []
        for f in json.loads(body)["files"]:
            mode = "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular"
            old = current.get(f["path"])
            oid = None if old is None else hashlib.sha256(old).hexdigest() if mode == "lfs" else _git_sha1(old)
            out.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send(200, {"files": out})

    def _lfs_batch(self, payload: dict) -> None:
        objects = []
        for o in payload["objects"]:
            entry = {"oid": o["oid"], "size": o["size"]}
            if o["oid"] not in self.server.lfs:
                upload = {"href": f"{self.server.url}/lfs-store/{o['oid']}"}
                entry["actions"] = {"upload": upload, "verify": {"href": f"{self.server.url}/lfs-verify"}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def _commit(self, repo: dict, types: str, repo_id: str, rev: str, body: bytes) -> None:
        if rev not in repo["branches"]:
            return self._send(404, {"error": f"Invalid rev id: {rev}"})
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        files = dict(repo["branches"][rev])
        for line in lines[1:]:
            v = line["value"]
            if line["key"] == "file":
                files[v["path"]] = base64.b64decode(v["content"])
            elif line["key"] == "deletedFile":
                files.pop(v["path"])
            elif line["key"] == "lfsFile":
                if v["oid"] not in self.server.lfs:
                    return self._send(422, {"error": f"LFS object {v['oid']} was never uploaded"})
                files[v["path"]] = self.server.lfs[v["oid"]]
        oid = hashlib.sha1(body).hexdigest()
        repo["branches"][rev], repo["heads"][rev] = files, oid
        repo["commits"].append(
            {
                "revision": rev,
                "summary": lines[0]["value"]["summary"],
                "paths": [ln["value"]["path"] for ln in lines[1:]],
            }
        )
        self._send(
            200, {"commitUrl": f"{self.server.url}/{repo_id}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
        )


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A running LocalHub; huggingface_hub pointed at it, online, with the git-LFS upload path and a token."""
    from huggingface_hub import constants

    server = LocalHub(HF_TOKEN)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest turns the Hub off for every other test
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def docs(tmp_path):
    return documents(tmp_path / "runs", raw_shard(tmp_path / "runs"))


def test_publish_documents_uploads_shards_card_and_manifest_on_hash_branch(hub, docs, capsys):
    publish.main([str(docs), "--repo_id", "nano/web-docs", "--endpoint", hub.url, "--license", "odc-by"])

    manifest = read_manifest(docs)
    branch = f"nf-{manifest['hash'][:12]}"
    repo = hub.repos[("dataset", "nano/web-docs")]
    assert repo["visibility"] == "private"  # the default since issue 13 (it was public)
    assert [c["revision"] for c in repo["commits"]] == [branch]  # one commit, on the hash branch, main untouched
    assert set(repo["branches"]["main"]) == {".gitattributes"}
    files = repo["branches"][branch]
    shards = sorted(p.relative_to(docs).as_posix() for p in (docs / "documents").rglob("*.parquet"))
    assert shards and set(shards) <= set(files)
    assert not any(p.startswith(("rejected/", "quarantine/")) for p in files)  # raw text stays local by default
    for rel in shards:  # bytes arrived intact through the LFS path
        assert files[rel] == (docs / rel).read_bytes()
    assert hub.lfs and all(files[rel] in hub.lfs.values() for rel in shards)

    uploaded = json.loads(files["manifest.json"])
    assert uploaded["hash"] == manifest["hash"] and uploaded["counts"] == manifest["counts"]
    assert uploaded["config"]["hub_token"] == "<redacted>"

    card = files["README.md"].decode()
    from huggingface_hub import DatasetCard

    data = DatasetCard(card).data
    assert data.license == "odc-by"
    assert {c["config_name"] for c in data.configs} == {"documents"}
    assert "## What this upload holds" in card and "`rejected/part-00000.parquet`" in card and "private" in card
    assert f'revision="{branch}"' in card and "nano/web-docs" in card
    # The token never leaves the Authorization header: not in any body, card, manifest or log line.
    out = capsys.readouterr()
    assert all(HF_TOKEN.encode() not in b for b in [*hub.bodies, *files.values()])
    assert HF_TOKEN not in out.out + out.err
    assert branch in out.out


def test_republishing_the_same_artifact_makes_no_new_commit(hub, docs):
    argv = [str(docs), "--repo_id", "nano/web-docs", "--endpoint", hub.url]
    publish.main(argv)
    publish.main(argv)
    assert len(hub.repos[("dataset", "nano/web-docs")]["commits"]) == 1


def test_private_flag_and_explicit_revision(hub, docs):
    publish.main([str(docs), "--repo_id", "nano/web-docs", "--endpoint", hub.url, "--private", "--revision", "main"])
    repo = hub.repos[("dataset", "nano/web-docs")]
    assert repo["visibility"] == "private"
    assert [c["revision"] for c in repo["commits"]] == ["main"] and "README.md" in repo["branches"]["main"]


def test_public_only_when_asked(hub, docs):
    publish.main([str(docs), "--repo_id", "nano/web-docs", "--endpoint", hub.url, "--private", "false"])
    repo = hub.repos[("dataset", "nano/web-docs")]
    assert repo["visibility"] == "public"
    card = next(iter(repo["branches"][c["revision"]] for c in repo["commits"]))["README.md"].decode()
    assert "as public (`--private false`)" in card


def test_include_rejected_uploads_them_pii_redacted(docs, tmp_path):
    """rejected/ holds the full text of dropped documents and quarantine/ raw lines: both are redacted on upload."""
    from artifact_factory import write_parquet

    email, phone = "ann.lee@example.org", "(555) 010-0199"
    (docs / "rejected" / "part-00000.parquet").unlink()
    write_parquet(
        docs / "rejected" / "part-00000.parquet",
        [
            {
                "id": "doc6",
                "source": "web",
                "stage": "filter",
                "reason": "gopher_short_document",
                "text": f"write to {email} or call {phone}",
            }
        ],
    )
    (docs / "quarantine" / "part-00000.parquet").unlink()
    write_parquet(
        docs / "quarantine" / "part-00000.parquet",
        [{"file": "raw.jsonl", "line_or_row": 9, "error": "invalid JSON", "raw": f'{{"text": "{email}'}],
    )
    out = tmp_path / "preview"
    publish.main([str(docs), "--repo_id", "nano/web-docs", "--dry_run", str(out), "--include_rejected"])

    rejected = pq.read_table(out / "rejected" / "part-00000.parquet").to_pylist()
    quarantine = pq.read_table(out / "quarantine" / "part-00000.parquet").to_pylist()
    assert rejected[0]["text"] == "write to |||EMAIL_ADDRESS||| or call |||PHONE_NUMBER|||"
    assert rejected[0]["reason"] == "gopher_short_document"
    assert quarantine[0]["raw"] == '{"text": "|||EMAIL_ADDRESS|||' and quarantine[0]["line_or_row"] == 9
    uploaded = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert email.encode() not in uploaded and phone.encode() not in uploaded
    card = (out / "README.md").read_text()
    assert "PII-redacted" in card and "Left out" not in card


def test_a_symlink_out_of_the_artifact_is_refused(docs, tmp_path):
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----")
    (docs / "documents" / "notes.txt").symlink_to(secret)
    with pytest.raises(ConfigError, match="symlink to .*id_rsa, outside the artifact"):
        publish.main([str(docs), "--repo_id", "nano/web-docs", "--dry_run", str(tmp_path / "preview")])
    assert not (tmp_path / "preview").exists()


def test_republishing_into_main_replaces_what_was_there(hub, tmp_path):
    runs = tmp_path / "runs"
    docs = documents(runs, raw_shard(runs))
    argv = [str(docs), "--repo_id", "nano/web-docs", "--endpoint", hub.url, "--revision", "main"]
    publish.main(argv)
    (docs / "documents" / "part-00001.parquet").unlink()  # the next build of the artifact has one shard fewer
    publish.main(argv)
    files = hub.repos[("dataset", "nano/web-docs")]["branches"]["main"]
    assert "documents/part-00001.parquet" not in files  # else the card's documents/*.parquet glob would read it
    assert {"documents/part-00000.parquet", "README.md", ".gitattributes"} <= set(files)


def test_checkpoint_goes_to_a_model_repo_without_pickles(hub, tmp_path):
    runs = tmp_path / "runs"
    ckpt = checkpoint(runs, sft(runs, traces(runs, raw_shard(runs))))
    publish.main([str(ckpt), "--repo_id", "nano/tiny-sft", "--endpoint", hub.url])

    assert ("dataset", "nano/tiny-sft") not in hub.repos
    repo = hub.repos[("model", "nano/tiny-sft")]
    files = repo["branches"][repo["commits"][0]["revision"]]
    assert files["model.safetensors"] == (ckpt / "model.safetensors").read_bytes()
    assert {"config.json", "eval.json", "README.md", "manifest.json"} <= set(files)
    assert not any(p.endswith((".bin", ".pt")) or p.startswith("checkpoint-") for p in files)
    from huggingface_hub import ModelCard

    assert ModelCard(files["README.md"].decode()).data.library_name == "transformers"


def test_checkpoint_with_only_pickle_weights_is_refused(hub, tmp_path):
    runs = tmp_path / "runs"
    ckpt = checkpoint(runs, sft(runs, traces(runs, raw_shard(runs))))
    (ckpt / "model.safetensors").rename(ckpt / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="safetensors only"):
        publish.main([str(ckpt), "--repo_id", "nano/tiny-sft", "--endpoint", hub.url])
    assert hub.repos == {}


def test_a_wrong_token_is_a_clear_error(hub, docs, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 30)
    with pytest.raises(ConfigError, match="could not create the repository for nano/web-docs.*401") as e:
        publish.main([str(docs), "--repo_id", "nano/web-docs", "--endpoint", hub.url])
    assert "hf_xxx" not in str(e.value)


def test_an_unreachable_hub_is_a_clear_error(hub, docs):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        ConfigError, match=f"could not create the repository for nano/web-docs at http://127.0.0.1:{port}"
    ):
        publish.main([str(docs), "--repo_id", "nano/web-docs", "--endpoint", f"http://127.0.0.1:{port}"])


def test_offline_mode_is_a_clear_error(hub, docs, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="could not create the repository.*offline mode is enabled"):
        publish.main([str(docs), "--repo_id", "nano/web-docs", "--endpoint", hub.url])


def test_dry_run_writes_exactly_the_upload_and_loads_with_datasets(docs, tmp_path, monkeypatch, capsys):
    """No token and no network: the preview directory is a loadable dataset repo (its card's configs work)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))
    out = tmp_path / "preview"
    assert publish.main([str(docs), "--repo_id", "nano/web-docs", "--dry_run", str(out), "--include_rejected"]) == 0

    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    expected = sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*") if p.is_file())
    assert written == expected and "README.md" in written  # the artifact as is, its card rendered for the Hub
    # The card written at commit and the published one list the same configs: both see the same thing.
    front = [yaml.safe_load((d / "README.md").read_text().split("---")[1])["configs"] for d in (docs, out)]
    assert front[0] == front[1]
    printed = capsys.readouterr().out
    assert all(rel in printed for rel in written)

    import datasets

    cache = str(tmp_path / "hf-datasets-cache")
    kept = datasets.load_dataset(str(out), "documents", split="train", cache_dir=cache)
    rejected = datasets.load_dataset(str(out), "rejected", split="train", cache_dir=cache)
    counts = read_manifest(docs)["counts"]
    assert kept.num_rows == counts["kept"] and rejected.num_rows == sum(counts["rejected"].values())
    assert sorted(rejected["reason"]) == sorted(pq.read_table(docs / "rejected").column("reason").to_pylist())


def test_zero_row_shards_are_uploaded_but_kept_out_of_viewer_configs(docs, tmp_path):
    """`datasets` cannot read a zero-row Parquet file, so the card must not point the viewer at one."""
    from artifact_factory import write_parquet
    from huggingface_hub import DatasetCard

    empty = pq.read_table(docs / "documents" / "part-00000.parquet").slice(0, 0)
    pq.write_table(empty, docs / "documents" / "part-00002.parquet")  # an empty shard among full ones
    (docs / "quarantine" / "part-00000.parquet").unlink()
    write_parquet(docs / "quarantine" / "part-00000.parquet", [])  # a folder with nothing but an empty shard
    out = tmp_path / "preview"
    publish.main([str(docs), "--repo_id", "nano/web-docs", "--dry_run", str(out), "--include_rejected"])

    assert (out / "documents" / "part-00002.parquet").exists() and (out / "quarantine" / "part-00000.parquet").exists()
    configs = {c["config_name"]: c for c in DatasetCard((out / "README.md").read_text()).data.configs}
    assert set(configs) == {"documents", "rejected"}
    assert configs["documents"]["data_files"][0]["path"] == [
        "documents/part-00000.parquet",
        "documents/part-00001.parquet",
    ]
    import datasets

    for name in configs:
        ds = datasets.load_dataset(str(out), name, split="train", cache_dir=str(tmp_path / "cache"))
        assert ds.num_rows == pq.read_table(docs / name).num_rows


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{tmp}/nowhere", "--repo_id", "a/b"], "artifact directory not found"),
        (["{tmp}/runs/raw", "--repo_id", "a/b"], "has no manifest.json"),
        (["{docs}", "--repo_id", "no-slash"], "expected ORG/NAME"),
        (["{docs}", "--repo_id", "a/b/c"], "not a Hub repository id"),
        (["{docs}", "--repo_id", "a/b..c"], "not a Hub repository id"),
        (["--repo_id", "a/b"], "no artifact given"),
        (["{docs}"], "--repo_id ORG/NAME is required"),
    ],
)
def test_clear_errors(docs, tmp_path, argv, message):
    argv = [a.format(tmp=tmp_path, docs=docs) for a in argv]
    with pytest.raises(ConfigError, match=message):
        publish.main(argv)


def test_incomplete_artifact_and_missing_token_are_refused(docs, tmp_path, monkeypatch):
    from huggingface_hub import constants

    manifest = json.loads((docs / "manifest.json").read_text())
    (docs / "manifest.json").write_text(json.dumps(manifest | {"status": "running"}))
    with pytest.raises(ConfigError, match="not complete"):
        publish.main([str(docs), "--repo_id", "a/b"])
    (docs / "manifest.json").write_text(json.dumps(manifest))

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))
    with pytest.raises(ConfigError, match="no Hugging Face token"):
        publish.main([str(docs), "--repo_id", "a/b"])


def test_cli_takes_the_artifact_as_a_positional_argument(docs, tmp_path, capsys, monkeypatch):
    from pipelines import cli

    monkeypatch.setattr(sys, "argv", list(sys.argv))  # cli.main rewrites sys.argv for argparse's usage line

    cfg = publish.parse_args([str(docs), "--repo_id", "a/b", "--private"])
    assert (cfg.artifact, cfg.repo_id, cfg.private, cfg.dry_run) == (str(docs), "a/b", True, None)
    assert cli.main(["publish", str(tmp_path / "missing"), "--repo_id", "a/b"]) == 2
    assert "artifact directory not found" in capsys.readouterr().err


@pytest.mark.slow  # builds the session's tiny base checkpoint when no other test has yet (~30 s on 2 busy cores)
def test_dry_run_of_the_real_tiny_base_is_a_loadable_model(tiny_base, tmp_path):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM

    out = tmp_path / "preview"
    publish.main([str(tiny_base), "--repo_id", "nano/tiny-base", "--dry_run", str(out)])
    assert ModelCard((out / "README.md").read_text()).data.pipeline_tag == "text-generation"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "NemotronHForCausalLM"
    assert (out / "model.safetensors").read_bytes() == (tiny_base / "model.safetensors").read_bytes()


def test_dry_run_again_is_a_no_op_a_stale_preview_is_replaced_a_foreign_directory_refused(docs, tmp_path, capsys):
    """`make demo` twice must end green: our own up-to-date preview is left as is (issue 13 item 16)."""
    out = tmp_path / "preview"
    argv = [str(docs), "--repo_id", "nano/web-docs", "--dry_run", str(out)]
    assert publish.main(argv) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert publish.main(argv) == 0 and "already holds exactly these files" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    (out / "documents" / "part-00000.parquet").write_bytes(b"an older build")  # a preview of another version
    assert publish.main(argv) == 0
    assert (out / "documents" / "part-00000.parquet").read_bytes() == (
        docs / "documents" / "part-00000.parquet"
    ).read_bytes()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(ConfigError, match="not empty and is not a publish preview"):
        publish.main([*argv[:-1], str(mine)])
    assert (mine / "notes.txt").read_text() == "my notes"


def test_a_large_artifact_goes_up_through_upload_folder_and_the_revision_holds_exactly_it(hub, docs, capsys):
    """Past --large_upload_files, publish stages the upload (links, no copies) and calls HfApi.upload_folder, which
    commits in resumable batches with hf_xet (this Hub has no Xet: its one-commit fallback runs here)."""
    argv = [str(docs), "--repo_id", "nano/web-docs", "--endpoint", hub.url, "--revision", "main"]
    publish.main(argv)
    (docs / "documents" / "part-00001.parquet").unlink()  # a shard the first upload has and this one does not
    publish.main([*argv, "--large_upload_files", "1"])

    assert "several resumable commits" in capsys.readouterr().out
    repo = hub.repos[("dataset", "nano/web-docs")]
    files = repo["branches"]["main"]
    assert "documents/part-00001.parquet" not in files  # delete_patterns: the revision holds exactly this artifact
    assert files["documents/part-00000.parquet"] == (docs / "documents" / "part-00000.parquet").read_bytes()
    assert {"README.md", "manifest.json", ".gitattributes"} <= set(files)
    assert not list(docs.parent.glob(f".{docs.name}.publish-*"))  # the staging folder is gone after success
