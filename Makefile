# Two entry points: `make demo` (set up, run the main job) and `make test` (set up, run the tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNS := runs/digits

.PHONY: setup lava lava-netx demo test bench clean

setup: $(VENV)/.installed

# torch is pinned and installed first: the machine's CPU wheel; an unpinned torch pulls a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		(echo "snn-compile needs Python >= 3.11 (set PYTHON=...)"; exit 2)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,cluster]'
	# NeuroBench's own operation counter checks ours in the tests; without its dependencies, whose
	# torchaudio would pull another torch (it needs only torch, snntorch and numpy to count).
	$(BIN)/pip install --quiet --no-deps neurobench==2.3.0
	touch $@

# Lava (lava-nc 0.10.0) needs Python 3.10; it gets its own environment when one can be found.
lava: setup
	$(BIN)/python -m targets.lava.environment

# lava-dl 0.6.0 (netx) for the check against Intel's own reading of .net files: opt-in, about 5.6 GB
# (its torch 2.3.1 is the CUDA-linked wheel); the netx tests skip without it.
lava-netx: setup
	$(BIN)/python -m targets.lava.netx_runner setup

demo: setup
	mkdir -p $(RUNS)
	$(BIN)/snn-compile train --dataset digits --arch mlp -o $(RUNS)/mlp.pt
	$(BIN)/snn-compile $(RUNS)/mlp.pt --target loihi2 --bits 8 --force
	$(BIN)/snn-compile train --dataset digits --arch csnn -o $(RUNS)/csnn.pt
	$(BIN)/snn-compile $(RUNS)/csnn.pt --target loihi2 --bits 8 --force

# The Lava tests run when a Python 3.10 lets the Lava environment be created; otherwise they skip.
test: setup
	$(BIN)/python -m targets.lava.environment --if-available
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/bench_emulator.py
	$(BIN)/python -m targets.lava.environment --if-available
	$(BIN)/python bench/bench_lava.py

clean:
	rm -rf $(VENV) .lava-venv .lava-dl-venv runs
