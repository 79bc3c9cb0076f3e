"""Hub cards rendered from an artifact's `manifest.json`, so provenance is never typed by hand.

    from pipelines.core.cards import render_card
    text = render_card("runs/demo/curate", repo_id="me/demo-docs", revision="nf-0123456789ab")

There is one Jinja template per artifact kind in `card_templates/` (`documents.md.jinja`, `blend.md.jinja`, ...);
they share the partials `_provenance.md.jinja` (stage, config, inputs and their lineage back to the raw
shards, code version, packages), `_counts.md.jinja` (counts, drop reasons, conservation check) and
`_data.md.jinja` (configs, splits, schema, `load_dataset`). The YAML front matter is built here with
`huggingface_hub`'s `DatasetCardData` / `ModelCardData`, and the `configs` it lists (one per directory of
Parquet shards, e.g. `documents/`, `rejected/`, `quarantine/`, `phase1/`) are what the Hub's dataset viewer
and `datasets.load_dataset` read. Secrets (keys such as `token`, `api_key`, and any `hf_...` token or
string passed in `secrets`) are redacted before anything is rendered.

Length (~470 lines): one renderer for every artifact kind (configs from Parquet footers, lineage, tables,
redaction); what differs between kinds lives in the templates, not here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pyarrow as pa
import yaml

from pipelines.core import storage
from pipelines.core.artifacts import MANIFEST, input_hash, read_manifest
from pipelines.core.config import ConfigError

TEMPLATES = Path(__file__).parent / "card_templates"


@dataclass(frozen=True)
class CardKind:
    template: str  # card_templates/<template>.md.jinja
    repo_type: str  # "dataset" or "model"
    task_categories: tuple[str, ...]
    tags: tuple[str, ...]


KINDS: dict[str, CardKind] = {
    "documents": CardKind("documents", "dataset", ("text-generation",), ("pretraining", "web-text")),
    "blend": CardKind("blend", "dataset", ("text-generation",), ("pretraining", "data-mixture")),
    "traces": CardKind("traces", "dataset", ("text-generation", "question-answering"), ("synthetic", "reasoning")),
    "synthetic_documents": CardKind(
        "synthetic_documents", "dataset", ("text-generation",), ("pretraining", "synthetic", "nemotron-cc")
    ),
    "sft": CardKind("sft", "dataset", ("text-generation",), ("synthetic", "reasoning", "sft")),
    "preference": CardKind("preference", "dataset", ("text-generation",), ("synthetic", "dpo", "preference")),
    "rl_prompts": CardKind(
        "rl_prompts", "dataset", ("reinforcement-learning", "question-answering"), ("math", "grpo")
    ),
    "checkpoint": CardKind("checkpoint", "model", (), ("nemotron-h",)),
}
# Artifacts that are not published on their own (a selection holding three sets, demo data, a classifier).
GENERIC = CardKind("generic", "dataset", (), ())
# Other spellings stages may write in `manifest["kind"]`.
ALIASES = {"sft_set": "sft", "preference_set": "preference", "preferences": "preference", "rl": "rl_prompts"}
ALIASES |= {"rl_set": "rl_prompts", "model": "checkpoint"}

STANDARD_FIELDS = {"kind", "name", "stage", "config", "config_hash", "inputs", "hash", "counts", "code_version"}
STANDARD_FIELDS |= {"packages", "created_at", "duration_s", "status"}
SPLITS = ("train", "validation", "test")
# Folders kept for inspection or reuse, never the default view: dropped rows and the dedup index.
SIDE_CONFIGS = ("rejected", "quarantine")  # dropped rows (publish leaves them out unless asked)
SIDE_DIRS = (*SIDE_CONFIGS, "lsh_index")
PREFERRED_DEFAULT = ("default", "documents")  # the kept rows, where a stage writes them
SECRET_KEY = re.compile(r"(^|_)(token|api_?key|secret|password|passwd|credentials?)$|^authorization$", re.I)
HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{20,}")
REDACTED = "<redacted>"
SIDE_DIRS_SET = frozenset(SIDE_DIRS)
# Config keys shown in the "model and sampling" (traces) and "training" (checkpoint) tables.
GENERATION_KEYS = ("model", "backend", "revision", "sampl", "temperature", "top_", "max_new_tokens", "num_samples")
GENERATION_KEYS += ("reasoning", "seed", "prompt_format")
TRAINING_KEYS = ("model_name_or_path", "dataset", "learning_rate", "max_steps", "epochs", "batch_size", "beta")
TRAINING_KEYS += ("loss_type", "lora", "max_length", "num_generations", "reward", "alpha", "dtype", "seed")


def card_kind(kind: str, generic: bool = False) -> CardKind:
    """The card template and Hub metadata for an artifact kind (`documents`, `traces`, `checkpoint`, ...).

    An unknown kind is an error (publish refuses it), or with `generic` the plain card every artifact gets.
    """
    name = ALIASES.get(kind.replace(" ", "_"), kind.replace(" ", "_"))
    if name not in KINDS:
        if generic:
            return GENERIC
        raise ConfigError(f"no card template for artifact kind '{kind}'; known kinds: {', '.join(KINDS)}")
    return KINDS[name]


def redact(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """A copy of `value` with credentials replaced by `<redacted>` (by key name, `hf_...` shape or exact value)."""
    if isinstance(value, dict):
        return {
            k: REDACTED if SECRET_KEY.search(str(k)) and v not in (None, "", False) else redact(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            if secret:
                value = value.replace(secret, REDACTED)
        return HF_TOKEN.sub(REDACTED, value)
    return value


def size_category(n: int) -> str:
    """The Hub's `size_categories` bucket for `n` rows."""
    bounds = [(10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M")]
    bounds += [(10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B")]
    bounds += [(10**11, "10B<n<100B"), (10**12, "100B<n<1T")]
    return next((label for bound, label in bounds if n < bound), "n>1T")


def find(artifact: str | Path, pattern: str, top_only: bool = False) -> list[tuple[str, str]]:
    """(path relative to the artifact, full path or URL) of the files matching `pattern` at any depth (or at the
    top only), skipping hidden files and folders; local or on object storage alike."""
    fs, root = storage.filesystem(artifact)
    root = root.rstrip("/")
    found = []
    for f in sorted(fs.glob(f"{root}/{pattern}" if top_only else f"{root}/**/{pattern}")):
        rel = f[len(root) + 1 :]
        if not any(part.startswith(".") for part in rel.split("/")):
            found.append((rel, storage.join(artifact, rel)))
    return found


def data_configs(artifact: str | Path) -> list[dict[str, Any]]:
    """One Hub dataset config per directory of Parquet shards, the default view first.

    Each: `{"name", "default", "dir", "splits": {split: [relative paths]}, "data_files": [...], "rows": {split: n},
    "schema": [(column, type)]}`. Files named `train-*`/`validation-*`/`test-*` form those splits; any other
    name is `train`. Row counts and schemas come from Parquet footers (no data is read).
    """
    by_dir: dict[str, list[Path]] = {}
    found = list(find(artifact, "*.parquet"))
    for rel, _ in found:
        by_dir.setdefault(Path(rel).parent.as_posix(), []).append(Path(rel))
    # one round trip or two each on an object store: read together
    metas = storage.parquet_metadata_many([full for _, full in found])
    footers = {rel: meta for (rel, _), meta in zip(found, metas, strict=True)}
    configs = []
    for d, files in by_dir.items():
        rows = {rel.as_posix(): footers[rel.as_posix()].num_rows for rel in files}
        splits: dict[str, list[str]] = {}
        for rel in files:
            prefix = re.split(r"[-_.]", rel.name, maxsplit=1)[0]
            splits.setdefault(prefix if prefix in SPLITS else "train", []).append(rel.as_posix())
        splits = {s: splits[s] for s in SPLITS if s in splits}
        # `datasets` (and so the Hub viewer) cannot read a zero-row Parquet file: list only shards with rows.
        readable = {s: [p for p in ps if rows[p]] for s, ps in splits.items() if any(rows[p] for p in ps)}
        if readable == splits and len(splits) == 1:  # a glob keeps the card short for thousands of shards
            data_files = [{"split": next(iter(splits)), "path": f"{d}/*.parquet" if d != "." else "*.parquet"}]
        else:
            data_files = [{"split": s, "path": paths} for s, paths in readable.items()]
        configs.append(
            {
                "name": "default" if d == "." else d.replace("/", "-"),
                "dir": d,
                "splits": splits,
                "data_files": data_files,
                "rows": {s: sum(rows[p] for p in ps) for s, ps in splits.items()},
                "schema": [(f.name, str(f.type)) for f in footers[files[0].as_posix()].schema.to_arrow_schema()],
            }
        )
    side = [c for c in configs if SIDE_DIRS_SET.intersection(c["dir"].split("/"))]
    main = [c for c in configs if c not in side]
    rank = {name: i for i, name in enumerate(PREFERRED_DEFAULT)}
    main.sort(key=lambda c: (rank.get(c["name"], len(rank)), c["name"]))
    first = next((c for c in main if c["data_files"]), None)
    for c in configs:
        c["default"] = c is first
    return main + side


def tables(obj: Any, title: str = "", depth: int = 0) -> list[dict[str, Any]]:
    """Markdown-ready tables `{"title", "columns", "rows"}` from nested JSON (blend.json, eval.json, ...).

    A mapping of scalars is a key/value table; a mapping (or list) of mappings of scalars is one row per entry;
    anything deeper is split by key, and past three levels the rest is printed as JSON in a cell.
    """

    def scalar(v: Any) -> bool:
        return v is None or isinstance(v, bool | int | float | str) or (isinstance(v, list) and all(map(scalar, v)))

    def records(v: Any) -> bool:
        items = v.values() if isinstance(v, dict) else v
        return (
            isinstance(v, dict | list)
            and len(v) > 0
            and all(isinstance(r, dict) and all(map(scalar, r.values())) for r in items)
        )

    if records(obj):
        rows = list(obj.items()) if isinstance(obj, dict) else [(str(i), r) for i, r in enumerate(obj)]
        columns = list(dict.fromkeys(k for _, r in rows for k in r))
        body = [[k, *(r.get(c, "") for c in columns)] for k, r in rows]
        return [{"title": title, "columns": ["", *columns], "rows": body}]
    if not isinstance(obj, dict):
        return [{"title": title, "columns": ["value"], "rows": [[obj]]}]
    leaf = {k for k, v in obj.items() if scalar(v) or depth >= 2}
    out = (
        [{"title": title, "columns": ["key", "value"], "rows": [[k, obj[k]] for k in obj if k in leaf]}]
        if leaf
        else []
    )
    for k, v in obj.items():
        if k not in leaf:
            out += tables(v, f"{title} / {k}" if title else str(k), depth + 1)
    return out


def lineage(inputs: list[dict[str, Any]], depth: int = 0, seen: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Inputs and, through their manifests, their inputs, back to the raw shards: a flat list with `depth`.

    An input whose hash no longer matches the one recorded (rebuilt or edited since) is flagged, and its current
    inputs are not followed: they are not this artifact's lineage.
    """
    out = []
    for inp in inputs:
        path, recorded = str(inp.get("path", "")), inp.get("hash", "")
        node = {"depth": depth, "path": path, "hash": recorded}
        out.append(node)
        if "://" in path:
            node["what"] = "remote input (identified by its URL)"
            continue
        manifest = read_manifest(path)
        if manifest is None:
            try:
                now = input_hash(path)
            except FileNotFoundError:
                node["what"] = "raw input (not on this machine)"
                continue
            node["what"] = "raw input" + ("" if now == recorded else f"; changed since (now {now[:12]})")
            continue
        node["what"] = f"{manifest.get('kind')} made by `nanoforge {manifest.get('stage')}`"
        if manifest.get("hash") != recorded:
            node["what"] += f"; rebuilt since (now {str(manifest.get('hash'))[:12]})"
        elif depth < 16 and recorded not in seen:
            out += lineage(manifest.get("inputs", []), depth + 1, seen | {recorded})
    return out


def count_summary(counts: dict[str, Any]) -> dict[str, Any]:
    """Counts split into scalars, per-reason breakdowns (with % of input), decontamination and conservation."""
    total = counts.get("input") if isinstance(counts.get("input"), int) else None
    pct = (lambda n: f"{100 * n / total:.2f}%") if total else (lambda n: "")
    scalars = [[k, v] for k, v in counts.items() if not isinstance(v, dict)]
    breakdowns = [
        {
            "title": k,
            "drops": any(w in k for w in ("reject", "drop", "unpaired", "quarantin", "skip")),
            "rows": [
                [reason, n, pct(n) if isinstance(n, int) else ""]
                for reason, n in sorted(v.items(), key=lambda x: str(x[0]))
            ],
        }
        for k, v in counts.items()
        if isinstance(v, dict)
    ]
    decont = [
        [r.split(":", 1)[1], n] for b in breakdowns for r, n, _ in b["rows"] if str(r).startswith("contaminated:")
    ]
    conservation = None
    if total is not None and isinstance(counts.get("kept"), int):
        parts = {
            k: sum(v.values()) if isinstance(v, dict) else v
            for k, v in counts.items()
            if k in ("kept", "rejected", "quarantined")
        }
        accounted = sum(v for v in parts.values() if isinstance(v, int))
        terms = " + ".join(f"{k} ({v})" for k, v in parts.items())
        verdict = "holds" if accounted == total else f"DOES NOT hold (off by {total - accounted})"
        conservation = f"input ({total}) = {terms}: {verdict}"
    return {
        "total": total,
        "scalars": scalars,
        "breakdowns": breakdowns,
        "decontamination": decont,
        "conservation": conservation,
    }


def pick(config: dict[str, Any], keys: tuple[str, ...]) -> list[list[Any]]:
    return [[k, v] for k, v in config.items() if any(s in k for s in keys) and v not in (None, "", [], {})]


def distinct(artifact: str | Path, config: dict | None, columns: tuple[str, ...], limit: int = 20) -> list[dict]:
    """Distinct values (with row counts) of `columns` over a config's shards, e.g. each trace's generator and
    sampling parameters as actually recorded in the data. Reads only those columns."""
    files = [storage.join(artifact, p) for ps in (config or {}).get("splits", {}).values() for p in ps]
    present = [c for c in columns if config and c in dict(config["schema"])]
    if not files or not present:
        return []
    table = pa.concat_tables(storage.read_table(f, columns=present) for f in files).flatten()
    # Per-sample seeds make every row distinct, and all-null fields say nothing.
    table = table.select(
        [c for c in table.column_names if c.rsplit(".", 1)[-1] != "seed" and table[c].null_count < len(table)]
    )
    counts = table.group_by(table.column_names).aggregate([([], "count_all")]).sort_by([("count_all", "descending")])
    rows = [[*r.values()] for r in counts.slice(0, limit).to_pylist()]
    return [{"title": " + ".join(present), "columns": [*table.column_names, "rows"], "rows": rows}]


def _cell(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, dict | list) else "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = _cell
    return env


def _card_data(kc: CardKind, manifest: dict, configs: list, license: str, language: list[str], pretty_name: str):
    from huggingface_hub import DatasetCardData, ModelCardData

    tags = ["nanoforge", *kc.tags, *(["trl"] if manifest["stage"] in ("sft", "dpo", "grpo") else [])]
    if kc.repo_type == "model":
        base = str(manifest["config"].get("model_name_or_path") or "")
        hub_base = base.count("/") == 1 and not Path(base).exists() and not base.startswith((".", "/"))
        return ModelCardData(
            license=license,
            language=language,
            library_name="transformers",
            pipeline_tag="text-generation",
            base_model=base if hub_base else None,
            tags=tags,
        )
    default_rows = sum(next((c["rows"] for c in configs if c["default"]), {}).values())
    return DatasetCardData(
        license=license,
        language=language,
        task_categories=list(kc.task_categories),
        size_categories=[size_category(default_rows)],
        pretty_name=pretty_name,
        tags=tags,
        configs=[
            {
                "config_name": c["name"],
                "data_files": c["data_files"],
                **({"default": True} if c["default"] else {}),
                # `datasets` caches a local folder under its name and a hash of these configs (relative patterns):
                # without the artifact's hash here, runs/a/sft and runs/b/sft, or a rerun with another config, would
                # read one cache entry. `description` is a BuilderConfig field, so it goes into that hash.
                "description": f"nanoforge {manifest['kind']} {manifest.get('hash', '')}",
            }
            for c in configs
            if c["data_files"]  # a directory of empty shards is uploaded but is no viewer config
        ],
    )


def render_card(
    artifact: str | Path,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    license: str = "other",
    language: list[str] | tuple[str, ...] = ("en",),
    pretty_name: str | None = None,
    secrets: tuple[str, ...] = (),
    upload: dict[str, Any] | None = None,
    local_path: str | Path | None = None,
    manifest: dict[str, Any] | None = None,
) -> str:
    """The README.md (YAML front matter + body) for the complete artifact at `artifact`.

    `upload` (from publish) says what the repository holds: `{"private": bool, "left_out": ["rel (why)", ...],
    "redacted": [rel, ...]}`; folders left out get no viewer config and the card lists them.
    Without `repo_id` it is the card written into the artifact itself when it is committed: the loading code names
    `local_path` (where the artifact will be) and a kind without a template gets the generic card. `manifest`: the
    one about to be committed (on object storage the card goes up before the manifest, the commit marker).
    """
    artifact = str(artifact)
    raw = manifest or read_manifest(artifact)
    if raw is None:
        raise ConfigError(f"{artifact}: no complete {MANIFEST}; only finished artifacts get a card")
    manifest = redact(raw, secrets)
    kc = card_kind(manifest["kind"], generic=repo_id is None)
    configs = data_configs(artifact)
    if kc is GENERIC and len({c["dir"].split("/")[0] for c in configs if c["data_files"]}) > 1:
        for c in configs:  # a container of sets (select's sft/, preference/, rl_prompts/): no default, name one
            c["default"] = False
    if upload is not None:
        left = {why.split(" (")[0] for why in upload.get("left_out", ())}
        configs = [c for c in configs if not any(p in left for ps in c["splits"].values() for p in ps)]
    pretty_name = pretty_name or f"{manifest['name']} ({manifest['kind']}, nanoforge {manifest['stage']})"
    card_data = _card_data(kc, manifest, configs, license, list(language), pretty_name)

    def json_tables(pattern: str) -> list[dict[str, Any]]:
        return [
            t for rel, full in find(artifact, pattern) for t in tables(redact(storage.read_json(full), secrets), rel)
        ]

    fs = storage.filesystem(artifact)[0]
    weights = [(rel, fs.size(storage.filesystem(f)[1])) for rel, f in find(artifact, "*.safetensors", top_only=True)]
    context = {
        "m": manifest,
        "card_data": card_data.to_yaml(),
        "repo_id": repo_id or str(local_path or artifact),
        "at_revision": f', revision="{revision}"' if revision else "",
        "pretty_name": pretty_name,
        "config_yaml": yaml.safe_dump(manifest["config"], sort_keys=False, allow_unicode=True),
        "lineage": lineage(manifest.get("inputs", [])),
        "counts": count_summary(manifest.get("counts", {})),
        "configs": configs,
        "upload": upload,
        # What a stage recorded beyond the standard fields (art.extra): thresholds, generator, decontamination...
        "extra_tables": [t for k, v in manifest.items() if k not in STANDARD_FIELDS for t in tables(v, k)],
        "generation": pick(manifest["config"], GENERATION_KEYS),
        "generated_with": distinct(
            artifact, next((c for c in configs if c["default"]), None), ("generator", "sampling_params", "reasoning")
        )
        if kc.template == "traces"
        else distinct(
            artifact, next((c for c in configs if c["default"]), None), ("task", "generator", "sampling_params")
        )
        if kc.template == "synthetic_documents"
        else [],
        # The prompt files a rephrase artifact carries (prompts/<task>.md), shown whole on its card.
        "prompts": [
            (rel.removeprefix("prompts/").removesuffix(".md"), storage.read_text(full))
            for rel, full in find(artifact, "prompts/*.md", top_only=True)
        ],
        "training": pick(manifest["config"], TRAINING_KEYS),
        "blend_tables": json_tables("blend.json"),
        "eval_tables": json_tables("eval.json") if kc.repo_type == "model" else [],
        "token_files": [rel.removesuffix(".idx") for rel, _ in find(artifact, "*.idx")],
        "weights": weights,
        "model_config": tables(_model_config(storage.join(artifact, "config.json")), "config.json")
        if kc.repo_type == "model"
        else [],
    }
    text = _environment().get_template(f"{kc.template}.md.jinja").render(**context)
    return re.sub(r"\n{3,}", "\n\n", text)


def write_card(
    artifact: str | Path, local_path: str | Path | None = None, manifest: dict[str, Any] | None = None
) -> str:
    """Write README.md into an artifact being committed (local or on object storage), unless the stage wrote its
    own README.md and the kind has no card template (demo data). Returns the card's path."""
    card = storage.join(artifact, "README.md")
    manifest = manifest or read_manifest(artifact) or {}
    if storage.exists(card) and card_kind(str(manifest.get("kind", "")), generic=True) is GENERIC:
        return card
    storage.write_text(render_card(artifact, local_path=local_path, manifest=manifest), card)
    return card


def _model_config(path: str) -> dict[str, Any]:
    """The architecture fields of a transformers `config.json` worth showing on a card."""
    if not storage.exists(path):
        return {}
    config = storage.read_json(path)
    keep = ("architectures", "model_type", "hidden_size", "num_hidden_layers", "hybrid_override_pattern", "vocab_size")
    keep += ("num_attention_heads", "num_key_value_heads", "max_position_embeddings", "torch_dtype", "dtype")
    return {k: config[k] for k in keep if k in config}
