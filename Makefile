# Entry points: `make demo` and `make test` (the whole suite; CI runs it), plus `make test-fast` (the quick inner
# loop: tests not marked slow), `make test-slow` (only those) and `make docs` (the documentation site; CI builds
# it). All install into .venv first (idempotent).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: install demo test test-fast test-slow docs clean

install: $(STAMP)

# torch first, pinned, so nothing later pulls a CUDA build; then the package and its dependencies.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,docs]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/videocm demo --out outputs/demo

# Two pytest-xdist workers, one per core, each file on one worker (its module fixtures built once) and one torch
# thread per worker (tests/conftest.py). The tests' subprocesses keep torch's own thread count: the FSDP-against-plain
# comparisons were calibrated that way (torchrun gives each of its processes one thread, a plain run all cores).
XDIST := -n 2 --dist loadfile
test: $(STAMP)
	$(PY) -m pytest -q $(XDIST) --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m "not slow" --durations=15

# The documentation site (mkdocs.yml) into site/, offline; strict: a broken link fails it. `mkdocs serve` previews.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

test-slow: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m slow --durations=15

clean:
	rm -rf $(VENV) outputs .pytest_cache site
