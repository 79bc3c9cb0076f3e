"""The mix plan's questions to the workers: each source's sums, then the cuts of its stream, found by narrowing.

The driver of `nanoforge mix` never reads the prepared documents. A pass is a Ray task per prepared file
(`search_file`) answering every open request at once, and a tree of tasks summing the answers (`sum_partials`):
  - totals: (documents, tokens) per source;
  - a cut (pipelines/blending/plan.py `plan_cuts`) in an epoch of a source's stream at r tokens: the documents'
    priorities in a range [lo, lo + 2**bits) (all 2**64 at first) as a histogram of 2**SEARCH_BITS bins of
    (documents, tokens); the driver keeps the bin where the running tokens reach r and asks again inside it, until
    the range holds at most GATHER_DOCS documents, which come back whole: (priority, key, tokens) each.
So the driver holds at most (cuts x (2**SEARCH_BITS + GATHER_DOCS)) rows a pass, and a pass count that grows with
log(documents): 2 passes up to GATHER_DOCS documents a source, 3 up to ~80 M, 4 up to ~330 G.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.blending.ops import SEARCH_SCHEMA, search_file, sum_partials
from pipelines.blending.plan import FULL, Cut, Resolve, cut_in
from pipelines.core import storage

SEARCH_BITS = 12  # a search round splits a range of the stream order into 2**12 histogram bins
GATHER_DOCS = 20_000  # a range holding at most this many documents is read whole (rows on the driver, per cut)


def search(prepared: str, seed: int, requests: list[dict], log: dict) -> pa.Table:
    """One pass of `search_batch` over the prepared (source, key, tokens) columns: a Ray task per prepared file,
    their outputs summed by a tree of tasks (16 at a time). The driver holds a reference per file and gets one
    table: the requests' histograms, and the documents of the ranges it asked to read whole (at most GATHER_DOCS
    a request). Plain tasks: a Ray Data pass with a groupby took seconds a round here, the tasks milliseconds."""
    import ray

    search_task, reduce = ray.remote(search_file), ray.remote(sum_partials)
    asked = ray.put(requests)
    refs = [search_task.remote(f, seed, asked) for f in storage.glob(storage.join(prepared, "*.parquet"))]
    while len(refs) > 1:
        refs = [reduce.remote(*refs[i : i + 16]) for i in range(0, len(refs), 16)]
    rows = sum_partials(ray.get(refs[0])) if refs else SEARCH_SCHEMA.empty_table()
    log["rounds"] += 1
    log["max_rows"] = max(log["max_rows"], len(rows))
    return rows


def totals(prepared: str, seed: int, sources: list[str], log: dict) -> dict[str, tuple[int, int]]:
    """(documents, tokens) per source, summed by workers."""
    requests = [{"source": s, "epoch": 0, "lo": 0, "bits": FULL, "shift": FULL} for s in sources]
    rows = search(prepared, seed, requests, log).to_pylist()
    found = {int(r["q"]): (int(r["count"]), int(r["tokens"])) for r in rows}
    return {s: found.get(q, (0, 0)) for q, s in enumerate(sources)}


def resolve_on_workers(
    prepared: str, seed: int, docs: dict[str, int], log: dict, tokens: dict[str, int] | None = None
) -> Resolve:
    """Finds the plan's cuts with passes over the prepared data: each query's range of the stream order narrows
    to the histogram bin holding its cut, until it holds at most GATHER_DOCS documents, which are read whole.
    `tokens`: each source's tokens, given where every document holds at least one (an EOS is appended): then a cut
    at an end of an epoch (none of it, or all of it: an integer max_epochs, a phase taking a source whole) needs no
    pass, as `cut_in` would find it before the first document or after the last."""

    def at_end(q: dict) -> Cut | None:
        if tokens is None:
            return None
        if q["rule"] == "floor" and q["r"] <= 0:  # no document fits in 0 tokens: the cut before the first one
            return Cut(q["epoch"], 0, 0, 0, 0)
        if q["rule"] == "nearest" and q["r"] >= tokens[q["source"]]:  # the last document ends exactly at r
            return Cut(q["epoch"], docs[q["source"]], tokens[q["source"]], None, 0)
        return None

    def resolve(queries: list[dict]) -> list[Cut]:
        state = [{"lo": 0, "bits": FULL, "base": (0, 0), "docs": docs[q["source"]]} for q in queries]
        found: list[Cut | None] = [at_end(q) for q in queries]
        while any(f is None for f in found):
            asked = [i for i, f in enumerate(found) if f is None]
            requests = []
            for i in asked:
                st, whole = state[i], state[i]["docs"] <= GATHER_DOCS or state[i]["bits"] <= SEARCH_BITS
                shift = None if whole else st["bits"] - SEARCH_BITS
                requests.append({**queries[i], "lo": st["lo"], "bits": st["bits"], "shift": shift})
            rows = search(prepared, seed, requests, log)
            for q, (i, request) in enumerate(zip(asked, requests, strict=True)):
                mine = rows.filter(pa.compute.equal(rows["q"], q)).sort_by("bin")
                st, query = state[i], queries[i]
                if request["shift"] is None:
                    hi = st["lo"] + 2 ** st["bits"]
                    columns = [mine[c].to_numpy() for c in ("priority", "key", "tokens")]
                    found[i] = cut_in(*columns, query, st["base"], hi if hi < 2**FULL else None)
                    continue
                counts, tokens = mine["count"].to_numpy(), mine["tokens"].to_numpy()
                ends = st["base"][1] + np.cumsum(tokens)
                hit = np.flatnonzero(ends >= query["r"] if query["rule"] == "nearest" else ends > query["r"])
                if not len(hit):
                    raise RuntimeError(f"mix plan: {query} found no documents where the totals put them; rerun")
                b = int(hit[0])
                st["base"] = (st["base"][0] + int(counts[:b].sum()), st["base"][1] + int(tokens[:b].sum()))
                st["lo"] += int(mine["bin"][b].as_py()) << request["shift"]
                st["bits"], st["docs"] = request["shift"], int(counts[b])
        return found

    return resolve
