# Two commands on a fresh machine: `make demo` runs the offline demo study,
# `make test` runs the test suite. Both create .venv and install into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= all

.PHONY: install demo test clean-results

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --editable '.[test]'
	touch $@

install: $(STAMP)

# The run ends with its summary: the cells by state, the recommendation, where the tables and charts are.
demo: $(STAMP)
	PATH="$(BIN):$$PATH" snakemake --cores $(CORES) --configfile studies/digits-demo.yaml

test: $(STAMP)
	bash scripts/install-system-deps.sh
	PATH="$(BIN):$$PATH" TLSWEEP_REQUIRE_SLURM=$${CI:+1} python -m pytest

clean-results:
	rm -rf results .snakemake
