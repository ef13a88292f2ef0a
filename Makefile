# lightclip: every task a person runs. `make help` lists them.
#
# `make demo` and `make test` work on a fresh machine: they create the virtualenv, install
# torch and the dev tools, build the Rust extension, and then do their job. Re-running is
# incremental (cargo and the stamp files below decide what is stale).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The interpreter the virtualenv is made from. `make wheel PYTHON=python3.12` builds for 3.12
# in a venv of its own, since tch compiles against the torch (and Python headers) it finds.
PYTHON ?= python3
VENV ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
# The second CPython the wheel is checked on (`make test` builds a cp312 wheel with it): the
# first of python3.12 on PATH and pyenv's newest 3.12 that runs (a pyenv shim for a version
# that is installed but not selected does not). Empty: the 3.12 check skips, saying why.
PYTHON312 ?= $(shell for p in python3.12 $$(ls -d "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | sort -V | tail -1); do "$$p" -c '' 2>/dev/null && { command -v "$$p"; break; }; done)
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
OPEN_CLIP := open-clip-torch==3.3.0

# Build products live outside the clone (one target dir per venv path) so a fresh clone in a
# known place, like CI's, reuses the slow libtorch wrapper build; nothing depends on it
# existing. The pip/uv caches are the tools' own (~/.cache/uv).
CACHE ?= $(HOME)/.cache/lightclip
target_dir_for = $(CACHE)/target-$(shell printf '%s' "$(abspath $(1))" | cksum | cut -d' ' -f1)
export CARGO_TARGET_DIR ?= $(call target_dir_for,$(VENV))
# tch's build script finds torch by running `python` from the active virtualenv.
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(VIRTUAL_ENV)/bin:$(PATH)
export LIBTORCH_USE_PYTORCH := 1

.PHONY: help setup build test test-rust test-python demo bench wheel wheel-312 lint fmt stubs notebooks clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-12s %s\n", $$1, $$2}'

# What building a wheel needs: the pinned torch (tch compiles against it) and maturin.
$(VENV)/.wheel-deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(UV) pip install --python $(PY) -r pyproject.toml 'maturin>=1.7,<2'
	touch $@

$(VENV)/.deps: $(VENV)/.wheel-deps pyproject.toml | wordnet
	$(UV) pip install --python $(PY) -r pyproject.toml --extra dev
	# open_clip is only a test reference (its tokenizer); its torchvision etc. are not needed.
	$(UV) pip install --python $(PY) --no-deps $(OPEN_CLIP)
	touch $@

setup: $(VENV)/.deps ## create the virtualenv with torch and the dev tools

# WordNet 3.0 for EDA's synonym operations: Debian's wordnet-base, read from /usr/share/wordnet
# (or LIGHTCLIP_WORDNET); never copied into the repository. Without it EDA still runs, minus
# synonym replacement and insertion.
.PHONY: wordnet
wordnet: ## install WordNet (Debian's wordnet-base) for EDA when missing and running as root
	@if [ -f /usr/share/wordnet/data.noun ] || [ -n "$${LIGHTCLIP_WORDNET:-}" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing WordNet (wordnet-base) for EDA synonyms"; \
		apt-get install -y -q --no-install-recommends wordnet-base \
		|| { apt-get update -q && apt-get install -y -q --no-install-recommends wordnet-base; } \
		|| echo "warning: could not install wordnet-base; EDA synonym operations will be off" >&2; \
	else \
		echo "note: WordNet not found in /usr/share/wordnet: EDA synonym replacement and" \
			"insertion will be off. Install it with 'sudo apt-get install wordnet-base'" \
			"or point LIGHTCLIP_WORDNET at a WordNet 3.0 dict folder." >&2; \
	fi

build: $(VENV)/.deps ## build the extension (release) into the virtualenv
	$(VENV)/bin/maturin develop --release --uv -q

test: test-rust test-python ## run the whole test suite (Rust core, then Python)

test-rust: $(VENV)/.deps ## cargo test of the pure core (no Python, no libtorch)
	cargo test -p lightclip-core --release

test-python: build wheel wheel-312 ## pytest, including the wheels installed into clean venvs
	LIGHTCLIP_WHEEL="$$(ls -t dist/lightclip-*-cp$$($(PY) -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')-*.whl | head -1)" \
	LIGHTCLIP_WHEEL_312="$$(ls -t dist/lightclip-*-cp312-*.whl 2>/dev/null | head -1)" \
	LIGHTCLIP_PYTHON_312="$(PYTHON312)" \
	LIGHTCLIP_UV="$(abspath $(UV))" $(PY) -m pytest

demo: build ## train on the bundled data, evaluate, print results
	$(PY) -m lightclip demo

.PHONY: compare
compare: build ## CLIP vs LightCLIP + ablation rows on Flickr8k, 3 seeds each (ARGS="--rows clip lightclip --seeds 1" for a quick run)
	$(PY) -m lightclip.experiments.ablation $(ARGS)

bench: build ## run every benchmark (each prints its ratio against the reference)
	$(PY) benchmarks/run_all.py

# One wheel per CPython version, tagged manylinux (see [tool.maturin] in pyproject.toml for why
# not abi3 and why this tag). maturin's warning that lists torch's libraries as external is
# expected: the installed torch package provides them.
wheel: $(VENV)/.wheel-deps ## build an installable wheel into dist/ (PYTHON=python3.12: for 3.12)
	$(VENV)/bin/maturin build --release -i $(PY) -o dist -q

# The 3.12 wheel builds in its own venv and cargo target dir (the tch wrapper compiles against
# that Python), so the two builds never invalidate each other.
wheel-312: ## build the CPython 3.12 wheel into dist/ (skipped when no 3.12 is found)
	$(if $(PYTHON312),$(MAKE) --no-print-directory wheel PYTHON=$(PYTHON312) \
		CARGO_TARGET_DIR=$(call target_dir_for,.venv-python3.12),\
		@echo "no runnable CPython 3.12 (set PYTHON312=...): the 3.12 wheel check will skip")

lint: $(VENV)/.deps ## cargo fmt --check, clippy -D warnings, ruff
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --release -- -D warnings
	$(VENV)/bin/ruff check python tests benchmarks notebooks
	$(VENV)/bin/ruff format --check python tests benchmarks

fmt: $(VENV)/.deps ## format Rust and Python in place
	cargo fmt --all
	$(VENV)/bin/ruff format python tests benchmarks
	$(VENV)/bin/ruff check --fix python tests benchmarks notebooks

# notebooks/NAME.py is what a person edits; the .ipynb beside it is written from it. --update
# keeps the cell ids (and any outputs) of the cells already in the .ipynb.
notebooks: $(VENV)/.deps ## write notebooks/*.ipynb from their jupytext sources notebooks/*.py
	$(VENV)/bin/jupytext --to ipynb --update notebooks/*.py

stubs: build ## check python/lightclip/_core.pyi against the compiled module
	$(PY) -m mypy.stubtest lightclip._core --allowlist tests/stubtest_allowlist.txt

clean: ## remove the build products and the virtualenvs (the 3.12 wheel's too)
	rm -rf "$(CARGO_TARGET_DIR)" $(VENV) dist python/lightclip/_core.*.so
	rm -rf "$(call target_dir_for,.venv-python3.12)" .venv-python3.12
