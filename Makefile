# Two commands do all setup on a fresh machine:
#   make demo   install, build a small land index (H3 res 3), print its summary, self-check and a lookup
#   make test   install, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision: empty = tools/pick_torch.py decides (an installed torch, else a local wheel in
# pip's find-links, else the registry's); set it to force one, e.g. TORCH_SPEC='torch torchvision'.
TORCH_SPEC ?=
DEMO_RES ?= 3
DEMO_DIR ?= indexes/res$(DEMO_RES)-land

.PHONY: install demo test test-all bench-build clean

$(VENV)/.installed: pyproject.toml tools/pick_torch.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(or $(TORCH_SPEC),$$($(PY) tools/pick_torch.py))
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/build_index --resolution $(DEMO_RES) --out $(DEMO_DIR) --overwrite
	$(PY) -m build_index.inspect $(DEMO_DIR) --lookup=48.8584,2.2945 --lookup=-33.8568,151.2153

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m ''

bench-build: install
	$(PY) benchmarks/bench_build.py

clean:
	rm -rf $(VENV) indexes
