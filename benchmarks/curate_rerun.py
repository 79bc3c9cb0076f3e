"""curate's fuzzy-dedup step on a rerun (after a crash in the global steps, chunk checkpoints present): the band keys
that pass 1 stored in the checkpoints against the pass over the text that the step made before they were stored.

    python -m benchmarks.curate_rerun                 # the web text of benchmarks.curate x 4, ~19 MB
    python -m benchmarks.curate_rerun --copies 8

Input: `benchmarks.curate`'s documents, repeated `--copies` times, every copy after the first with small edits
(`perturb`), so fuzzy dedup has near-duplicates to find. Pass 1 runs with fuzzy dedup off and on (the cost of the
keys), two rounds; then `fuzzy.curate_step` runs on the same checkpoints with and without their `bands` column
(without: what an older curate wrote, so the step reads the text and computes the keys), twice each, on local Ray
with 2 CPUs. Both must reject the same rows. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from benchmarks.curate import base_documents, perturb
from pipelines import curate
from pipelines.core.runtime import init_ray
from pipelines.curation import chunks
from pipelines.dedup import fuzzy


def without_keys(files: list[str], folder: Path) -> list[str]:
    """Copies of the checkpoints as a curate before the keys wrote them: no `bands` column, no spec in the footer."""
    (folder / ".work" / "chunks").mkdir(parents=True)
    out = []
    for f in files:
        table = pq.read_table(f)
        footer = {k: v for k, v in json.loads(table.schema.metadata[b"nanoforge"]).items() if k != "minhash"}
        out.append(str(folder / ".work" / "chunks" / Path(f).name))
        pq.write_table(
            table.drop_columns(["bands"]).replace_schema_metadata({"nanoforge": json.dumps(footer)}), out[-1]
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--copies", type=int, default=4, help="times the web text is repeated (edited after the first)")
    a = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="curate_rerun-"))
    init_ray(num_cpus=2)
    rng = random.Random(0)
    docs = [
        dict(d, id=f"{r}-{d['id']}", text=perturb(d["text"], rng) if r else d["text"])
        for r in range(a.copies)
        for d in base_documents()
    ]
    (root / "in").mkdir()
    (root / "in" / "web.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "c.yaml").write_text("# bench\n# nanoforge curate --config c.yaml\nfilters: []\nlanguage_id: false\n")

    def config(spec: str, out: Path):
        argv = ["--config", str(root / "c.yaml"), "--input_paths", str(root / "in"), "--output_dir", str(out)]
        return curate.parse_args([*argv, "--fuzzy_dedup", spec, "--chunk_bytes", "500000", "--pii", "false"])

    seconds: dict[str, list[float]] = {}
    with pytest.MonkeyPatch.context() as m:  # pass 1 (and 3) only; the step is timed apart below
        m.setattr(curate, "global_steps", lambda cfg: [])
        for rnd in range(2):  # the first round also pays the workers' start and imports
            for spec, name in (("none", "pass 1, fuzzy dedup off"), ("fineweb", "pass 1, with the band keys")):
                cfg, t = config(spec, root / f"{spec}{rnd}"), time.perf_counter()
                curate.run(cfg, curate.check_config(cfg), str(root / f"{spec}{rnd}"))
                seconds.setdefault(name, []).append(round(time.perf_counter() - t, 2))
    keyed = chunks.chunk_files(str(root / "fineweb1" / ".work"))
    text = without_keys(keyed, root / "text")
    cfg, rejected = config("fineweb", root / "x"), {}
    for _ in range(2):
        for name, files in (("fuzzy step from the text (before)", text), ("fuzzy step from the keys (now)", keyed)):
            t = time.perf_counter()
            rows = fuzzy.curate_step(files, cfg).take_all()
            seconds.setdefault(name, []).append(round(time.perf_counter() - t, 2))
            rejected[name] = sorted(tuple(r.values()) for r in rows)
    assert len({json.dumps(r) for r in rejected.values()}) == 1, "the two paths rejected different rows"
    mb = sum(len(d["text"].encode()) for d in docs) / 1e6
    summary = {"docs": len(docs), "text_mb": round(mb, 1), "chunks": len(keyed), "rejected": len(rows)}
    print(json.dumps(summary | {"seconds": seconds}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
