# Set-up is part of every target: a fresh clone needs only `make test` or `make reproduce`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
SHARED_DATA := $(abspath ../shared/datasets)
export ATLIB_DATA ?= $(if $(wildcard $(SHARED_DATA)/cifar-10-batches-py),$(SHARED_DATA),)

.PHONY: setup test reproduce notebooks campaign-commit clean-venv

PROFILE ?= one-seed
SET ?=      # profile overrides, e.g. SET="seeds=[0,1] epochs=3" (no spaces inside a value)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

reproduce: setup
	$(PY) -m atlib reproduce --profile $(PROFILE) $(if $(strip $(SET)),--set $(SET))

# executed copies of the tutorial and the CPU demo, figures included, in docs/notebooks/ (to read without running
# anything), built from the committed runs with train=false: nothing trains. They run in a scratch folder that links
# results/one-seed/runs (only read) and holds a copy of results/cpu-demo/runs, so nothing under results/ changes.
NOTEBOOK_COPIES := 01-tutorial 10-cpu-demo
# atlib's runner: papermill with the kernel over IPC (no "running over TCP without encryption" warning)
export RUN_COPY := import sys; from pathlib import Path; from atlib.paper.pipeline import run_notebook; \
  run_notebook(Path(sys.argv[1]), Path(sys.argv[2]), {"overrides": {"train": False}}, progress=False)
notebooks: setup
	@scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && mkdir -p docs/notebooks && \
	mkdir -p "$$scratch/results/one-seed" "$$scratch/results/cpu-demo" && \
	ln -s "$(CURDIR)/results/one-seed/runs" "$$scratch/results/one-seed/runs" && \
	cp -R results/cpu-demo/runs "$$scratch/results/cpu-demo/" && \
	for nb in $(NOTEBOOK_COPIES); do \
	  echo "notebooks/$$nb.ipynb -> docs/notebooks/$$nb.ipynb"; \
	  (cd "$$scratch" && "$(CURDIR)/$(PY)" -c "$$RUN_COPY" "$(CURDIR)/notebooks/$$nb.ipynb" \
	    "$(CURDIR)/docs/notebooks/$$nb.ipynb") || exit 1; \
	done

# stop the background CPU campaign (if one runs) and commit its changed run directories with the epochs reached
campaign-commit: setup
	$(PY) -m atlib campaign commit --profile $(PROFILE) --stop

clean-venv:
	rm -rf $(VENV)
