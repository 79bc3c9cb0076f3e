"""The run report is one static page whose every image and link resolves, checked in a real headless browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import artifact_factory as make
import pytest

from pipelines.core.run_report import drop_reasons, write_run_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Loads the report in a frame and writes what the browser made of it into the DOM that --dump-dom prints.
PROBE = """<!doctype html><html><body><iframe id="f" src="report.html"></iframe><script>
document.getElementById("f").onload = () => {
  const d = document.getElementById("f").contentDocument;
  const images = [...d.images];
  const out = {images: images.length, broken: images.filter(i => !(i.complete && i.naturalWidth > 0))
               .map(i => i.getAttribute("src")), links: [...d.links].map(a => a.getAttribute("href"))};
  document.body.setAttribute("data-result", JSON.stringify(out));
};
</script></body></html>"""


class Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.refs += [attrs[k] for k in ("href", "src") if k in attrs]
        self.ids |= {attrs["id"]} if "id" in attrs else set()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    arts = make.all_kinds(root)
    stages = [(kind, str(path), "done") for kind, path in arts.items()] + [("grpo", str(root / "grpo"), "FAILED")]
    return write_run_report(root, stages)


def resolves(report: Path, ref: str, ids: set[str]) -> bool:
    if ref.startswith("#"):
        return ref[1:] in ids
    return (report.parent / ref).is_file()


def test_every_reference_resolves_and_every_plot_is_there(report):
    refs = Refs()
    refs.feed(report.read_text())
    assert refs.refs and all(resolves(report, r, refs.ids) for r in refs.refs), refs.refs
    plots = {Path(r).name for r in refs.refs if r.endswith(".png")}
    # drop reasons, pass rates, lengths, training curves and eval across stages
    expected = {"documents-drops.png", "traces-verified.png", "sft-drops.png", "traces-lengths.png"}
    expected |= {"checkpoint-training.png", "eval-across-stages.png", "rl_prompts-drops.png"}
    assert expected <= plots, plots
    links = {Path(r).name for r in refs.refs}
    assert {"manifest.json", "README.md", "trainer_state.json"} <= links


def test_drop_reasons_read_every_breakdown():
    counts = {"input": 10, "rejected": {"short": 2}, "unpaired": {"all_correct": 1}, "sft": {"rejected": {"x": 3}}}
    assert drop_reasons(counts) == {"short": 2, "unpaired:all_correct": 1, "sft/x": 3}


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium): browser check skipped"
)
def test_headless_chromium_loads_every_image_and_link(report):
    probe = report.parent / "probe.html"
    probe.write_text(PROBE)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files", "--disable-web-security"]
    flags += ["--virtual-time-budget=10000", f"--user-data-dir={report.parent / '.chromium'}", "--dump-dom"]
    done = subprocess.run([CHROMIUM, *flags, probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert "data-result" in done.stdout, done.stderr[-2000:]
    result = json.loads(done.stdout.split('data-result="', 1)[1].split('"', 1)[0].replace("&quot;", '"'))
    assert result["images"] >= 7 and result["broken"] == []
    refs = Refs()
    refs.feed(report.read_text())
    assert result["links"] and all(resolves(report, link, refs.ids) for link in result["links"])
