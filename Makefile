# The two commands: `make demo` (set up + run the offline demo) and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1

.PHONY: install test lint format demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
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
