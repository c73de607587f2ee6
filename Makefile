# The README's commands. `make demo` is the main job, `make test` the test suite; both set up from a clean clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch that lies on the build machines; users may install any torch>=2.6 themselves.
TORCH_WHEEL ?= /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
# The optional parts the tests exercise, installed with ditkit (see pyproject.toml).
EXTRAS ?= test,diffusers,tensorboard,serve
# The checkpoint `make serve` serves: the link `make demo` leaves in its output folder.
SERVE_CHECKPOINT ?= runs/demo/checkpoint
# When make started: the demo's reported wall time includes the setup.
MAKE_STARTED := $(shell date +%s)

.PHONY: venv test lint typecheck demo fmnist chromium serve clean

$(BIN)/ditkit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	if [ -f "$(TORCH_WHEEL)" ]; then $(BIN)/pip install -q "$(TORCH_WHEEL)"; \
	else $(BIN)/pip install -q "torch>=2.6" --index-url https://download.pytorch.org/whl/cpu || $(BIN)/pip install -q "torch>=2.6"; fi
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $(BIN)/ditkit

venv: $(BIN)/ditkit

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy src/ditkit

# The data and the browser are installed first; a missing dataset or browser then fails its tests instead
# of skipping them (the browser tests of `ditkit serve` drive Chromium through chromedriver).
test: venv lint fmnist chromium
	DITKIT_REQUIRE_DATA=1 DITKIT_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q

fmnist:
	@if [ ! -f "$(FMNIST_DIR)/train-images-idx3-ubyte.gz" ]; then \
		echo "Installing Debian's dataset-fashion-mnist package"; \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || \
		{ echo "error: could not install dataset-fashion-mnist; install it or set FMNIST_DIR" >&2; exit 1; }; \
	fi

chromium:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		echo "Installing Debian's chromium and chromium-driver (browser tests of ditkit serve)"; \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver) || \
		{ echo "error: could not install chromium and chromium-driver; install them to run the browser tests" >&2; exit 1; }; \
	fi

demo: venv fmnist
	$(BIN)/ditkit demo --data-dir $(FMNIST_DIR) --out runs/demo --started-at $(MAKE_STARTED)

# The checkpoint is checked first, before any installing; the venv has the serve extra (EXTRAS).
serve:
	@if [ ! -e "$(SERVE_CHECKPOINT)" ]; then \
		echo "error: no checkpoint at $(SERVE_CHECKPOINT): run make demo first, or make serve SERVE_CHECKPOINT=PATH" >&2; \
		exit 1; \
	fi
	@$(MAKE) --no-print-directory venv
	$(BIN)/ditkit serve $(SERVE_CHECKPOINT)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
