# Two commands a new user needs: `make demo` (the main job on the embedded digits data)
# and `make test` (the full suite, with every module's docstring examples; test paths and options are
# in pyproject.toml). `make lint` runs ruff. All create .venv from the pinned requirements first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test lint bench peers venv clean

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
	$(VENV)/bin/ruff check keras_stiffness cli tests bench examples
	$(VENV)/bin/ruff format --check keras_stiffness cli tests bench examples

bench: $(STAMP)
	$(PY) bench/gram_bench.py
	$(PY) bench/callback_overhead.py

# Peer benchmark against neural-tangents (bench/peers/README.md): its own venv, since jax 0.4.23 needs
# numpy<2 and the project venv has numpy 2. peer_bench.py runs here and calls nt_side.py in that venv.
PEER_PYTHON ?= python3.11
PEER_VENV := bench/peers/.venv
PEER_PY := $(PEER_VENV)/bin/python
PEER_STAMP := $(PEER_VENV)/.installed

$(PEER_STAMP): bench/peers/requirements.txt
	test -x $(PEER_PY) || $(PEER_PYTHON) -m venv $(PEER_VENV)
	$(PEER_PY) -m pip install --quiet --upgrade pip
	$(PEER_PY) -m pip install --quiet -r bench/peers/requirements.txt
	touch $(PEER_STAMP)

peers: $(STAMP) $(PEER_STAMP)
	$(PY) bench/peers/peer_bench.py --peer-python $(PEER_PY)

clean:
	rm -rf $(VENV) build *.egg-info
