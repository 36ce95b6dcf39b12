# Hourglass. A new user needs two commands: `make run` and `make test` (README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Both cores (pytest-xdist): work goes out in the order tests/conftest.py gives (the
# appliance build and the longest QEMU test first, on one worker), each xdist_group to one
# worker. `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder)

.PHONY: all deps install lint test test-fast bench run image clean i18n deb

all: install

# Debian packages: installed when missing (needs root, as on the appliance's build machine).
deps:
	@missing=$$(grep -v '^#' .ci/debian-packages | while read -r p; do \
		[ -n "$$p" ] && ! dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'ok installed' && echo "$$p"; \
		done; true); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:" $$missing; \
		if [ "$$(id -u)" != 0 ]; then echo "Run as root (or install: $$missing)"; exit 1; fi; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,freeze,bench]'
	touch $(STAMP)

install: deps $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Everything: unit, integration (root, loop devices), QEMU boots, end-to-end.
test: lint
	$(BIN)/pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# Only what needs neither root nor QEMU.
test-fast: install
	$(BIN)/pytest $(PYTEST_PARALLEL) -m "not integration and not qemu and not e2e and not faults" $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench.run

# The agent's Debian package for a running Debian 12 / Ubuntu 24.04 PC (docs/AGENT.md):
# dist/hourglass-agent_<version>_all.deb. Wheels are cached in ~/.cache/hourglass/wheels.
deb: install
	$(BIN)/python -m build.deb

clean:
	rm -rf $(VENV) dist work .pytest_cache .mypy_cache .ruff_cache

-include build/image.mk

# The app's translations (Debian's gettext tools): extract the messages from the sources,
# merge them into every catalog, compile the catalogs. Translate what msgmerge left empty.
I18N_SOURCES = $(shell find recovery_ui -name '*.py' | sort)
i18n:
	xgettext --language=Python --keyword=_ --keyword=N_ --keyword=ngettext:1,2 \
		--from-code=UTF-8 --add-comments=TRANSLATORS --sort-by-file --package-name=hourglass \
		--msgid-bugs-address=hourglass -o recovery_ui/locale/hourglass.pot $(I18N_SOURCES)
	sed -i '/^"POT-Creation-Date:/d' recovery_ui/locale/hourglass.pot
	for po in recovery_ui/locale/*/LC_MESSAGES/hourglass.po; do \
		msgmerge --quiet --update --backup=none --no-fuzzy-matching "$$po" recovery_ui/locale/hourglass.pot && \
		msgattrib --no-obsolete --output-file="$$po" "$$po" && \
		msgfmt --check --output-file="$${po%.po}.mo" "$$po" || exit 1; \
	done
