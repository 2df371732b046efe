# The two commands a user needs: `make demo` and `make test`. Everything else
# (the virtual environment, Python packages, Icarus Verilog) is set up on demand.

PYTHON    ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
CONFIG    ?= configs/default.toml
OUT       ?= build/verilog
# pytest workers: the cocotb builds are independent, one per parameter set.
JOBS      ?= 2

.PHONY: help setup tools demo test test-fast verilog bench fpga-report clean

help:
	@echo "make demo     generate the default NPU and run the int8 digits model on the simulated RTL"
	@echo "make test     the full test suite (unit tests + cocotb on generated Verilog)"
	@echo "make verilog  write $(OUT)/npu.v and npu.json from CONFIG=$(CONFIG)"
	@echo "make bench    benchmarks; JSON results in build/bench/"
	@echo "make fpga-report  build every supported board (Yosys + nextpnr from PyPI) and print one table"
	@echo "make setup    create .venv, install the project and simulators"
	@echo "make clean    remove build products (keeps .venv)"

setup: $(STAMP) tools

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

# Icarus Verilog simulates the generated RTL; Verilator is used only as a linter.
tools:
	@if ! command -v iverilog >/dev/null 2>&1 || ! command -v verilator >/dev/null 2>&1; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        echo "Installing Icarus Verilog and Verilator (apt-get)..."; \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog verilator >/dev/null \
	        || { echo "error: apt-get could not install iverilog/verilator; install Icarus Verilog >= 11 by hand" >&2; exit 1; }; \
	    elif ! command -v iverilog >/dev/null 2>&1; then \
	        echo "error: Icarus Verilog (iverilog >= 11) is required and not installed; run as root on Debian/Ubuntu or 'sudo apt-get install iverilog'" >&2; exit 1; \
	    else \
	        echo "note: verilator not found; the Verilog lint test will be skipped"; \
	    fi; \
	fi
	@iverilog -V 2>/dev/null | head -n 1

demo: setup
	$(BIN)/npu demo --config $(CONFIG)

test: setup
	$(BIN)/python -m pytest -n $(JOBS) --durations=10 $(PYTEST_ARGS)

# Unit tests only (Amaranth simulator, golden model, CLI): seconds, not minutes.
test-fast: setup
	$(BIN)/python -m pytest -m "not rtl" $(PYTEST_ARGS)

verilog: setup
	$(BIN)/npu generate --config $(CONFIG) --out $(OUT)

bench: setup
	$(BIN)/npu bench --out build/bench

# Every board's default NPU through synthesis and place-and-route (tens of minutes).
fpga-report: setup
	$(BIN)/npu fpga-report --out build/boards

clean:
	rm -rf build .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
