# The two commands: `make demo` (set up + run the offline demo) and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1

.PHONY: install browser test lint format demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The browser tests (tests/web/test_browser.py) drive Debian's headless Chromium; installed once, as root or with sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver)

test: $(STAMP) browser
	CLIPSEARCH_OFFLINE=1 $(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check clipsearch tests bench
	$(VENV)/bin/ruff format --check clipsearch tests bench

format: $(STAMP)
	$(VENV)/bin/ruff format clipsearch tests bench
	$(VENV)/bin/ruff check --fix clipsearch tests bench

demo: $(STAMP)
	$(PY) -m clipsearch demo

bench: $(STAMP)
	$(PY) bench/bench_index.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
