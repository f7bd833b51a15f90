# Quick start: `make demo` and `make test` work on a fresh machine with Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo cqt-demo test lint interop soak differential bench profile clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
	  ($(PYTHON) -m pip install -q --user virtualenv && $(PYTHON) -m virtualenv $(VENV))
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,lint,plot,tls]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m demo

# The stale write after a failover (CQT 0) and the Command Quiesce Time that stops it.
cqt-demo: $(STAMP)
	$(BIN)/python -m demo.cqt

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not interop"

interop: $(STAMP)
	$(BIN)/python -m pytest -q -m interop tests/interop

# The soak: the kernel host and our initiator together under every fault for 30 minutes (not
# CI; `make interop` runs the same test for 150 s). SOAK_SECONDS and SOAK_SEED override.
SOAK_SECONDS ?= 1800
soak: $(STAMP)
	NVMEOF_SOAK_SECONDS=$(SOAK_SECONDS) $(if $(SOAK_SEED),NVMEOF_SOAK_SEED=$(SOAK_SEED)) \
	  $(BIN)/python -m pytest -q -s -m interop tests/interop/test_kernel_soak.py

# The same host bytes to the Linux target (nvmet, in ../shared/linuxvm) and to ours, both kernel
# releases, seeded: docs/TOLERANCE.md. SEED and COUNT (mutation cases) can be overridden.
SEED ?= 1
COUNT ?= 2000
differential: $(STAMP)
	$(BIN)/python -m tests.differential --release bookworm --seed $(SEED) --count $(COUNT)
	$(BIN)/python -m tests.differential --release trixie --seed $(SEED) --count $(COUNT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info

bench: $(STAMP)
	$(BIN)/python bench/datapath.py
	$(BIN)/python bench/matrix.py
	$(BIN)/python bench/recovery.py
	$(BIN)/python bench/manyhosts.py

# py-spy on the target and the host at 4K random read QD32 (README, "Performance").
profile: $(STAMP)
	test -x $(BIN)/py-spy || $(BIN)/python -m pip install -q py-spy
	$(BIN)/python bench/profile.py
