# make test : set up a virtual environment from scratch and run lint + the full test suite (CPU only).
# make demo : set up, then generate example videos from the embedded tiny checkpoints into output/.
# make frontend-deps : Chromium (Debian package) and playwright-core for tests/frontend (part of make test;
#                      EASYANIMATE_SKIP_FRONTEND=1 skips it and the browser tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

FRONTEND := tests/frontend
NODE_STAMP := $(FRONTEND)/node_modules/.package-lock.json
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test lint demo clean frontend-deps

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

frontend-deps:
ifneq ($(EASYANIMATE_SKIP_FRONTEND),1)
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing Chromium for the frontend tests"; \
		( $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium ) \
			|| echo "could not install Chromium: the frontend tests will fail and say what is missing"; \
	fi
	@$(MAKE) --no-print-directory $(NODE_STAMP)
endif

# playwright-core drives Chromium from tests/frontend/drive.mjs; without npm the frontend tests say what is missing.
$(NODE_STAMP): $(FRONTEND)/package.json $(FRONTEND)/package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --prefix $(FRONTEND) --no-audit --no-fund && touch $@; \
	else \
		echo "npm not found: install Node.js 20+ for the frontend tests (or set EASYANIMATE_SKIP_FRONTEND=1)"; \
	fi

test: lint frontend-deps
	HF_HUB_OFFLINE=1 $(PY) -m pytest

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m easyanimate_core demo --out output
	@# the shipped ComfyUI workflows, run headless through the host harness on tiny checkpoints
	HF_HUB_OFFLINE=1 $(PY) -m tests.comfy_host.run_workflows output

clean:
	rm -rf $(VENV) output .pytest_cache .ruff_cache $(FRONTEND)/node_modules
