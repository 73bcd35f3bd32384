# Shipyard — `make up` starts the platform, `make test` checks everything. Both install first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install browser up test lint typecheck unit docs bench clean

install: $(STAMP)

# Idempotent: re-runs only when pyproject.toml changes. llama-cpp-python compiles from source the
# first time (about 6-8 minutes on 2 cores); pip caches the wheel, so later installs take seconds.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/python -m pip install --quiet -e '.[all]'
	@touch $(STAMP)

# The dashboard tests drive Debian's Chromium through Playwright (no browser download). Installed
# once; needs root, as on the CI machines.
browser:
	@test -x /usr/bin/chromium || DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
		|| (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null)

up: install
	$(BIN)/shipyard up

test: install browser
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/mypy
	$(BIN)/python -m shipyard.settings | diff -u docs/reference/settings.md - \
		|| (echo "docs/reference/settings.md is stale: run 'make docs'"; exit 1)
	$(BIN)/python -m shipyard.plugins | diff -u docs/reference/providers.md - \
		|| (echo "docs/reference/providers.md is stale: run 'make docs'"; exit 1)
	$(BIN)/python -m shipyard.plugins scorers | diff -u docs/reference/scorers.md - \
		|| (echo "docs/reference/scorers.md is stale: run 'make docs'"; exit 1)
	$(BIN)/python -m shipyard.plugins scanners | diff -u docs/reference/scanners.md - \
		|| (echo "docs/reference/scanners.md is stale: run 'make docs'"; exit 1)
	$(BIN)/typer shipyard.cli.main utils docs --name shipyard --title "CLI reference" --output .cli-doc.tmp >/dev/null \
		&& diff -u docs/reference/cli.md .cli-doc.tmp && rm -f .cli-doc.tmp \
		|| (rm -f .cli-doc.tmp; echo "docs/reference/cli.md is stale: run 'make docs'"; exit 1)
	$(BIN)/pytest -q

unit: install
	$(BIN)/pytest -q -m "not local_model"

docs: install
	$(BIN)/python -m shipyard.settings > docs/reference/settings.md
	$(BIN)/python -m shipyard.plugins > docs/reference/providers.md
	$(BIN)/python -m shipyard.plugins scorers > docs/reference/scorers.md
	$(BIN)/python -m shipyard.plugins scanners > docs/reference/scanners.md
	$(BIN)/typer shipyard.cli.main utils docs --name shipyard --title "CLI reference" --output docs/reference/cli.md

bench: install
	$(BIN)/python benchmarks/gateway_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
