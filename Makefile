# slotline: two commands on a fresh machine (`make demo`, `make test`).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: bootstrap fonts browser demo test lint bench requirements screenshots clean

bootstrap: fonts $(STAMP)

# The OCR tests render job screenshots in Chinese: they need a CJK font. Debian's
# fonts-noto-cjk is installed when missing and we are root (CI is); else a warning.
fonts:
	@if ! ls /usr/share/fonts/*/noto/NotoSansCJK-Regular.ttc >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q fonts-noto-cjk; \
	  else \
	    echo "warning: no Noto CJK font; tests/local/test_ocr.py needs fonts-noto-cjk" >&2; \
	  fi; \
	fi

# Debian's Chromium and CJK fonts for the browser tests (apt-get as root, else it says what
# to install and fails); nothing to do when both are there.
browser:
	bash tests/web/browser_deps.sh

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[local,dev]'
	touch $(STAMP)

demo: bootstrap browser
	$(PY) -m lib.app.demo

test: bootstrap browser
	$(PY) -m pytest

# docs/screenshots/*.png from the browser tests (a plain test run keeps them in tmp).
screenshots: bootstrap browser
	SLOTLINE_SCREENSHOTS=1 $(PY) -m pytest -q tests/web

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: bootstrap
	$(PY) bench/run.py

# requirements.txt for Vercel / Lambda: runtime dependencies, pinned as installed.
requirements: bootstrap
	$(PY) -m lib.app.deploy_requirements > requirements.txt

clean:
	rm -rf $(VENV) .slotline .pytest_cache .mypy_cache .ruff_cache
