# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lesionflow-installed
SNAKEMAKE := $(BIN)/snakemake --profile profiles/default

.PHONY: setup demo report test lint clean

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

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/snakemake --lint --configfile config/config.yaml
	$(BIN)/ruff check src scripts tests bench

clean:
	rm -rf results logs .snakemake .lesionflow
