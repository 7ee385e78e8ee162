# critperiods — the two commands: `make run` (default experiment) and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
SMK     := $(VENV)/bin/snakemake
CORES   ?= all
CONFIG  ?=
STAMP   := $(VENV)/.installed

.PHONY: run check-config test lint report bench bench-gpu bench-gpu-deps dataset help

help:
	@echo "make run     - install into $(VENV) and run the default experiment (config.yaml)"
	@echo "make run CONFIG=configs/x.yaml - run another experiment"
	@echo "make test    - run the test suite"
	@echo "make report  - build the HTML report of the last run (report.html; with CONFIG=x.yaml: report-x.html)"
	@echo "make bench   - benchmarks (bench/), results in bench/out/"
	@echo "make bench-gpu - GPU benchmark (about 5 minutes on one GPU): bench/out/gpu.md"
	@echo "make bench-gpu-deps - devinterp 1.3.2 etc. in .venv-gpu-deps/ for a GPU box without a registry"
	@echo "make lint    - ruff + snakemake --lint"

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Fashion-MNIST from Debian's package when we may install it; otherwise the
# workflow falls back to dataset.root and then to a torchvision download.
dataset:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) \
		|| echo "dataset-fashion-mnist not installable; torchvision will download it"; \
	fi

# config.yaml and the CONFIG files are checked before anything else runs: for a file that
# is not YAML, or is empty, Snakemake's message names neither the file nor the line.
check-config: $(STAMP)
	$(PY) -m critperiods check $(CONFIG)

run: $(STAMP) check-config dataset
	$(SMK) --cores $(CORES) $(if $(CONFIG),--configfile $(CONFIG))

# One pytest worker per core; the tests that read a session's finished tiny run go to one
# worker, so that it is made once (tests/conftest.py). Plain `pytest` runs them in one process.
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadgroup

# snakemake --lint exits 1 on any finding (e.g. a rule without a conda env); it checks the
# workflow with the default config and with the toy study's.
lint: $(STAMP)
	$(VENV)/bin/ruff check critperiods scripts tests bench tools
	$(SMK) --lint
	$(SMK) --lint --configfile configs/toy_landscapes.yaml

# report.html for the default, report-<last config's name>.html with CONFIG=…, so that
# experiments do not overwrite each other's report
REPORT = report$(if $(CONFIG),-$(basename $(notdir $(lastword $(CONFIG))))).html
report: $(STAMP) check-config
	$(SMK) --cores 1 $(if $(CONFIG),--configfile $(CONFIG)) --report $(REPORT)

BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml
	test -x $(BENCH_VENV)/bin/python || python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BENCH_VENV)/bin/pip install --quiet devinterp==2.0.1
	$(BENCH_VENV)/bin/pip install --quiet -e . --no-deps
	$(BENCH_VENV)/bin/pip install --quiet numpy scipy xarray netCDF4 tqdm pyyaml matplotlib
	touch $@

# devinterp 1.3.2 for the third column of the λ̂ benchmark (keeps torch 2.14.1).
BENCH13_VENV := .venv-bench13
$(BENCH13_VENV)/.installed: pyproject.toml
	test -x $(BENCH13_VENV)/bin/python || python3 -m venv $(BENCH13_VENV)
	$(BENCH13_VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BENCH13_VENV)/bin/pip install --quiet devinterp==1.3.2 pyyaml
	$(BENCH13_VENV)/bin/pip install --quiet -e . --no-deps
	touch $@

# Benchmarks (not tests): training throughput + trunk sharing, then λ̂ vs devinterp
# (in their own venvs so devinterp can never change the project's torch).
bench: $(STAMP) $(BENCH_VENV)/.installed $(BENCH13_VENV)/.installed
	$(PY) bench/bench_training.py
	$(BENCH_VENV)/bin/python bench/bench_llc.py
	cat bench/out/training.md bench/out/llc.md > bench/out/README.md
	$(PY) bench/publish.py

# The GPU path on one GPU (a few minutes): training, stacked seeds, λ̂, cost -> bench/out/gpu.md.
# devinterp 1.3.2 is compared where it can be imported (e.g. PYTHONPATH with its wheel).
bench-gpu: $(STAMP)
	$(PY) bench/bench_gpu.py $(BENCH_GPU_ARGS)
	$(PY) bench/publish.py

# For a GPU machine that cannot install from a registry: devinterp 1.3.2 and the pure-Python
# packages the benchmark needs beyond a stock PyTorch image, without torch, in one folder to
# copy there and put on PYTHONPATH (docs/performance.md, "Not measured").
GPU_DEPS := .venv-gpu-deps
bench-gpu-deps: $(STAMP)
	$(PY) -m pip install --quiet --no-deps --target $(GPU_DEPS) devinterp==1.3.2 einops \
		cloudpickle tqdm pyyaml
