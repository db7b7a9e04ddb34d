# Everything a fresh clone needs: `make demo` and `make test` install into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint reliability reliability-long bench bench-getfile clean screenshots

# The tutorial's example service (docs/writing-a-service.md) installs beside sockkit: its tests run in
# `make test`, and its entry point is what `sockkit serve minredis` finds.
EXAMPLES := examples/minredis

$(STAMP): pyproject.toml $(EXAMPLES:%=%/pyproject.toml)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' $(EXAMPLES:%=-e %)
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m sockkit demo

test: install lint
	$(PY) -m pytest -q
	$(PY) -m reliability --out .reliability

# The reliability table (short form, ~5 min): every scenario x every model, non-zero exit on a failed row.
reliability: install
	$(PY) -m reliability

reliability-long: install
	$(PY) -m reliability --long

# getfile vs nginx, http.server and the rsync daemon (Debian: apt-get install nginx-light rsync curl);
# ~3 min; the table on stdout and in bench/results/getfile.txt, with getfile.{json,png}.
# BENCH_ARGS=--quick for a smoke run.
bench-getfile: install
	$(PY) benchmarks/getfile.py $(BENCH_ARGS)

lint: install
	$(PY) -m ruff check src tests reliability benchmarks examples

# The server-model shoot-out (issue 5), ~16 min: every model and the reference peers; results in bench/results/.
bench: install
	$(PY) -m sockkit bench models

screenshots: install  # docs/img: the GUI on Xvfb (needs xvfb, xdotool, imagemagick), the HTTP listing in chromium
	$(PY) -m sockkit.gui.screenshots --out docs/img
	$(PY) -m tests.http.test_http_browser docs/img/http-listing.png

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache .reliability
