# Two entry points: `make demo` (set up + run the demo) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sspl-installed

.PHONY: setup browser demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

# The web app's browser test (tests/test_app.py) drives headless Chromium from Debian's packages. As root with
# apt-get (CI, containers) it is installed when missing; otherwise nothing happens and that test skips, saying why.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing chromium (apt-get) for the browser test"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
			|| echo "chromium could not be installed: the browser test will skip"; \
	fi

demo: $(STAMP)
	$(VENV)/bin/sspl demo --out demo_out

test: $(STAMP) browser
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench experiments
	$(VENV)/bin/ruff format --check src tests bench experiments

bench: $(STAMP)
	@echo "Benchmarks are separate scripts: see bench/README.md"

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
