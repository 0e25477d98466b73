# Set-up is part of every target: a fresh clone needs only `make test` or `make reproduce`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
SHARED_DATA := $(abspath ../shared/datasets)
export ATLIB_DATA ?= $(if $(wildcard $(SHARED_DATA)/cifar-10-batches-py),$(SHARED_DATA),)

.PHONY: setup test reproduce campaign-commit clean-venv

PROFILE ?= one-seed
SET ?=      # profile overrides, e.g. SET="seeds=[0,1] epochs=3" (no spaces inside a value)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

reproduce: setup
	$(PY) -m atlib reproduce --profile $(PROFILE) $(if $(strip $(SET)),--set $(SET))

# stop the background CPU campaign (if one runs) and commit its changed run directories with the epochs reached
campaign-commit: setup
	$(PY) -m atlib campaign commit --profile $(PROFILE) --stop

clean-venv:
	rm -rf $(VENV)
