# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lesionflow-installed
SNAKEMAKE := $(BIN)/snakemake --profile profiles/local

# The local one-node SLURM cluster of tests/workflow/test_slurm.py: one fake GPU, and a second
# partition for the tests to select through LESIONFLOW_SLURM_PARTITION.
SLURM_LOCAL := SLURM_LOCAL_FAKE_GPUS=1 SLURM_LOCAL_PARTITIONS="debug batch" tests/slurm/local-slurm.sh

.PHONY: setup demo report test test-slurm-cluster slurm-start slurm-stop slurm-status lint clean bench bench-quick

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name lesionflow --display-name "Python (lesionflow)" >/dev/null
	touch $(STAMP)

demo: setup
	$(SNAKEMAKE) --configfile config/config.yaml
	$(MAKE) --no-print-directory report
	@echo "Leaderboard: results/compare/leaderboard.csv  Report: results/report.zip  Runs: results/runs/"

report: setup
	$(SNAKEMAKE) --configfile config/config.yaml --report results/report.zip

# Two pytest-xdist workers (the whole-pipeline tests' Snakemake jobs leave a core idle most of
# the time); TEST_WORKERS=0 runs the tests in one process.
TEST_WORKERS ?= 2

test: setup test-slurm-cluster
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

# Starts the SLURM tests' cluster where that can work: as root on Linux with apt-get (it installs
# Debian's SLURM packages). In CI (CI=true) it must start, since there the SLURM tests fail rather
# than skip; elsewhere a failure only means they skip.
test-slurm-cluster:
	@if [ "$$CI" = true ]; then \
		$(SLURM_LOCAL) start; \
	elif [ "$$(id -u)" = 0 ] && [ "$$(uname -s)" = Linux ] && command -v apt-get >/dev/null; then \
		$(SLURM_LOCAL) start || echo "make test: the local SLURM cluster did not start (see above): the SLURM tests will skip"; \
	else \
		echo "make test: the SLURM tests will skip unless the local cluster already runs: starting it needs root on Linux with apt-get (sudo make slurm-start)"; \
	fi

slurm-start:
	$(SLURM_LOCAL) start

slurm-stop:
	$(SLURM_LOCAL) stop

slurm-status:
	$(SLURM_LOCAL) status

# Every benchmark in bench/ against its bare reference, as one table (bench/out/bench.csv): about
# 8 minutes on 2 cores; bench-quick is a 3-minute smoke run.
bench: setup
	$(BIN)/python bench/run.py

bench-quick: setup
	$(BIN)/python bench/run.py --quick

lint: setup
	$(BIN)/snakemake --lint --configfile config/config.yaml
	$(BIN)/ruff check src scripts tests bench

clean:
	rm -rf results logs .snakemake .lesionflow
