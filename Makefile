# The project's commands. Each creates .venv if it is missing and installs the
# package (editable, with dev tools) before it runs.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= out/demo

.PHONY: demo test lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.py | $(PY)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	bash scripts/ensure_browser.sh
	bash scripts/check_bazel.sh
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pipelines.demo_main --output_dir=$(OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: $(STAMP) lint
	$(PY) -m pytest -n 2 --dist loadfile tests

clean:
	rm -rf out

bench: $(STAMP)
	@for script in bench/*.py; do \
	  echo "== $$script"; $(PY) $$script || exit 1; \
	done
