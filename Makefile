# minigriffin: every target bootstraps a local virtual environment (.venv) when it is missing and installs
# what it needs, so `make test` and `make demo` work on a fresh machine with nothing else done first.
# Needs Python >= 3.11 (recurrentgemma, the test oracle, requires it). Override with `make PYTHON=python3.12`.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# Books for the demo: $MINIGRIFFIN_BOOKS if set; otherwise `minigriffin demo` downloads them from Project
# Gutenberg into the cache (once).
BOOKS ?= $(MINIGRIFFIN_BOOKS)

.PHONY: test demo doctor bench notebooks install clean help

help:
	@echo "make test    install the package with its test, oracle and mpi extras into $(VENV), run pytest"
	@echo "make demo    install the package into $(VENV), train a small Griffin on books (~3 min), sample, plot"
	@echo "make doctor  print versions, Numba threading and GPU availability"
	@echo "make bench   run benchmarks/bench_scan.py"
	@echo "make notebooks  re-execute every notebook at the small size (as CI does) and rewrite its .ipynb"
	@echo "make clean   remove $(VENV) and caches"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "minigriffin needs Python >= 3.11, found " + sys.version.split()[0] + ": run make PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)

# Stamps record what is installed; they are redone when pyproject.toml changes.
$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[test,oracle,mpi]"
	@touch $@ $(VENV)/.installed-base

install: $(VENV)/.installed-base

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(VENV)/.installed-base
	$(BIN)/minigriffin demo $(if $(BOOKS),--data-dir $(BOOKS))

doctor: $(VENV)/.installed-base
	$(BIN)/minigriffin doctor

bench: $(VENV)/.installed-base
	$(BIN)/python benchmarks/bench_scan.py

# The committed outputs are what tests/test_notebooks.py compares against: refresh them after a change that moves
# them. Notebooks 5 and 6 need the books ($MINIGRIFFIN_BOOKS or the download cache). One: `make notebooks NB=06`.
notebooks: $(VENV)/.installed-test
	$(BIN)/python tests/test_notebooks.py $(NB)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
