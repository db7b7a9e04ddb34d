# Everything a fresh clone needs: `make demo` and `make test` install into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m sockkit demo

test: install lint
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check src tests benchmarks

# The server-model shoot-out (issue 5): every model and the reference peers; results in bench/results/.
bench: install
	$(PY) -m sockkit bench models

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
