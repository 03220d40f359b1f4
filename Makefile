# Two commands on a fresh machine (Python 3.11): `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: venv demo demo-data test test-fast bench clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

demo-data: venv
	$(PY) -m data_util.demo --out demo_data --preset small --workers 2

# The demo: synthetic data in the real layout, checked by the data doctor, then the two-iteration recipe, shortened,
# with two tiny models side by side (stage 1 -> stage 2 -> store -> ensemble -> iteration 2 on the ensemble's
# pseudo-labels -> store -> ensemble -> evaluate). One BLAS thread per process is much faster for the tiny models'
# small matrices on a small CPU.
demo: demo-data
	$(PY) -m ex_stage1 check_data with demo
	$(PY) -m ex_stage2 check_data with demo
	OMP_NUM_THREADS=1 $(PY) -m helpers.demo_recipe

test: venv
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not integration"

bench: venv
	$(PY) -m bench.models
	$(PY) -m bench.data
	$(PY) -m bench.eval
	$(PY) -m bench.train

clean-demo:
	rm -rf demo_data outputs/demo
