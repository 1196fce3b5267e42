# The two commands of the README: `make demo` and `make test`.
# Both create .venv (Python >= 3.12) at the repository root when it is missing.
# `make demo` installs only the base dependencies (about 0.4 GB; the demo needs no extra), and
# `make test` everything the test suite needs (`.[test]`: torch, tensorflow, beam, ... about 8 GB).
# Each install has its own stamp, so `make demo` never waits for the test extras.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test lint bench-bake bench-batches bench-imports venv services clean

$(PY):
	@PYBIN=$$(bash scripts/find-python.sh) && $$PYBIN -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q -c constraints.txt -e .
	@touch $(DEMO_STAMP)

venv: $(STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/arcoforge demo

services:
	@bash scripts/services.sh

test: $(STAMP) services
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q -ra

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy src/arcoforge

# The documentation site into site/ (open site/index.html): MkDocs with --strict (warnings are
# errors), the API reference from docstrings, and the tutorials (docs/tutorials/NN_*.py) executed
# at reduced size with their figures (results cached under build/docs-tutorials/).
.PHONY: docs
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q -c constraints.txt -e '.[docs]'
	@touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

bench-bake: $(STAMP)
	$(PY) benchmarks/bake.py

bench-batches: $(STAMP)
	$(PY) benchmarks/batches.py

bench-imports: $(DEMO_STAMP)
	$(PY) benchmarks/imports.py

clean:
	rm -rf $(VENV) .pytest_cache
