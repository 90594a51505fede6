# `make test` and `make bench` work on a fresh machine that has only Python 3.11.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= benchmarks/configs/cpu.toml

.PHONY: test bench install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test,plots]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/fewshot summary --data "$${FEWSHOT_DATA:-}" --protocol transfer

clean:
	rm -rf $(VENV) build *.egg-info
