# Two targets do all set-up: `make demo` (main job) and `make test` (the test suite).
# Both create or reuse the virtual environment in .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= cpu

.PHONY: demo test lint notebooks figures clean-results venv

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

clean-results:
	rm -rf results runs
