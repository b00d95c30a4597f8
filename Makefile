# Two commands set everything up on a fresh machine with Python >= 3.10 and pip:
#   make run    create .venv, install, run the study on the standard preset (report in
#               runs/standard/report.md; PRESET=tiny for a 90-second version)
#   make test   create .venv, install, run the test suite (the slow set: make test-slow)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# MNIST for zoo builds (the project ships the loader, never the data).
export WEIGHTSPACE_DATA ?= $(abspath ../shared/data)
PRESET ?= standard

.PHONY: install run test test-slow lint bench clean

install: $(STAMP)

# Re-install only when the package metadata or the constraints change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

run: install
	$(BIN)/weightspace experiment --preset $(PRESET) --out runs/$(PRESET)

test: install
	$(BIN)/python -m pytest -q

# The long tests (the full tiny study, kill-and-resume, MNIST zoos); CI runs them too.
test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

bench: install
	$(BIN)/python bench/graph.py
	$(BIN)/python bench/zoo_build.py
	$(BIN)/python bench/encoders.py --zoo zoos/standard

clean:
	rm -rf $(VENV) .pytest_cache
