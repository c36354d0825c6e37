# Two quickstart targets: `make demo` (install + run the main job) and `make test` (install + all tests).
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision are pinned as a matched pair: an unpinned torchvision drags in another torch.
PIP_INSTALL := $(BIN)/pip install -q -c constraints.txt

.PHONY: venv test-deps demo lint test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python
	$(PIP_INSTALL) -e .

test-deps: venv
	$(PIP_INSTALL) -e '.[test]'

demo: venv
	$(BIN)/rlft ui --open

lint: test-deps
	$(BIN)/ruff check .

test: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: test-deps
	for f in bench/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
