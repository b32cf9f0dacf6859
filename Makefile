# make test : set up a virtual environment from scratch and run lint + the full test suite (CPU only).
# make demo : set up, then generate example videos from the embedded tiny checkpoints into output/.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint demo clean

$(STAMP): requirements.txt requirements-dev.txt
	@# Reuse a torch that is already installed (e.g. ComfyUI's); otherwise install the CPU build 2.13.0.
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q torch==2.13.0; \
	fi
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	@touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m easyanimate_core demo --out output
	@# the shipped ComfyUI workflows, run headless through the host harness on tiny checkpoints
	HF_HUB_OFFLINE=1 $(PY) -m tests.comfy_host.run_workflows output

clean:
	rm -rf $(VENV) output .pytest_cache .ruff_cache
