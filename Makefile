# The two commands of the README: `make demo` and `make test`.
# Both create .venv (Python >= 3.12) at the repository root when it is missing.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench-bake bench-batches venv services clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || { PYBIN=$$(bash scripts/find-python.sh) && $$PYBIN -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/arcoforge demo

services:
	@bash scripts/services.sh

test: $(STAMP) services
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q -ra

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy src/arcoforge

bench-bake: $(STAMP)
	$(PY) benchmarks/bake.py

bench-batches: $(STAMP)
	$(PY) benchmarks/batches.py

clean:
	rm -rf $(VENV) .pytest_cache
