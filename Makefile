# Two commands a new user needs: `make demo` (the main job on the embedded digits data)
# and `make test` (the full suite, with every module's docstring examples; test paths and options are
# in pyproject.toml). `make lint` runs ruff. All create .venv from the pinned requirements first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test lint bench venv clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kstiff train

test: $(STAMP)
	$(PY) -m pytest -q --durations=10

lint: $(STAMP)
	$(VENV)/bin/ruff check keras_stiffness cli tests bench
	$(VENV)/bin/ruff format --check keras_stiffness cli tests bench

bench: $(STAMP)
	$(PY) bench/gram_bench.py
	$(PY) bench/callback_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info
