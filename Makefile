# Two commands do all setup on a fresh machine:
#   make demo   install, build a res-3 land index of the globe and a res-5 one of France + Australia,
#               verify both, answer two landmark lookups, say how to open the page
#   make test   install, run the fast test loop (no slow, ray, browser or gpu tests; docs/testing.md)
#   make test-all  install, run every test a machine without a GPU can (what CI runs), but the nightly ones
#   make test-nightly  the tests too slow for CI (the full ViT-L/14 and 100k-point parities, a training run)
#   make docs   the documentation site, offline, into site/ (mkdocs build --strict)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision: empty = tools/pick_torch.py decides (an installed torch, else a local wheel in
# pip's find-links, else the registry's); set it to force one, e.g. TORCH_SPEC='torch torchvision'.
TORCH_SPEC ?=
DEMO_RES ?= 3
DEMO_DIR ?= indexes/res$(DEMO_RES)-land
DEMO_REGION_DIR ?= indexes/res5-fr-au
WEB_BUILT := geoindex/serve/static/index.html geoindex/maps/basemap/countries-50m.json geoindex/maps/basemap/countries-10m.json

.PHONY: install demo test test-all test-nightly docs bench-build clean

$(VENV)/.installed: pyproject.toml tools/pick_torch.py | $(WEB_BUILT)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(or $(TORCH_SPEC),$$($(PY) tools/pick_torch.py))
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The web page (geoindex/serve/static/) and the basemap (geoindex/maps/basemap/): third-party JS and data
# from the npm registry as web/package-lock.json pins them, never from a CDN, never in git.
$(WEB_BUILT) &: web/package.json web/package-lock.json web/build.mjs $(wildcard web/src/*)
	cd web && npm ci --no-audit --no-fund && npm run build

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/geoindex build --resolution $(DEMO_RES) --out $(DEMO_DIR) --overwrite
	$(VENV)/bin/geoindex build --resolution 5 --country FR --country AU --out $(DEMO_REGION_DIR) --overwrite
	$(VENV)/bin/geoindex inspect $(DEMO_DIR)
	$(VENV)/bin/geoindex inspect $(DEMO_REGION_DIR) --lookup=48.8584,2.2945 --lookup=-33.8568,151.2153
	@echo
	@echo "See it on a map: $(VENV)/bin/geoindex serve --index $(DEMO_REGION_DIR) --embeddings-only"
	@echo "then open http://127.0.0.1:8000/ and type 48.8584, 2.2945 (no CLIP weights needed for a location lookup)"

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m 'not gpu and not nightly'

test-nightly: install
	$(PY) -m pytest -q -m nightly

# The site: docs/*.md, the measured tables rendered from benchmarks/results/*.json by
# docs/gen_benchmarks.py, the API reference from docstrings. Nothing is fetched (font: false).
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench-build: install
	$(PY) benchmarks/bench_build.py

clean:
	rm -rf $(VENV) indexes site
