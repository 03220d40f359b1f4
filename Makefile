# Two commands on a fresh machine (Python 3.11): `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
# requirements.txt is the exact lock (every package, direct and transitive), made from requirements.in by `make lock`.
LOCK := requirements.txt
TORCH_VERSION := $(shell sed -n 's/^torch==\([^ ]*\).*/\1/p' $(LOCK))
# Empty: torch/torchaudio from PyPI as locked (PyPI's Linux wheel is a CUDA 13 build; it also runs on the CPU).
# Set it to one of PyTorch's indexes to take that build of the same version instead, e.g.
#   make venv TORCH_INDEX=https://download.pytorch.org/whl/cpu     (CPU only, no CUDA wheels)
#   make venv TORCH_INDEX=https://download.pytorch.org/whl/cu128   (CUDA 12.8 drivers)
TORCH_INDEX ?=
UV_VERSION := 0.13.9

.PHONY: venv venv-rebuild env-check lock demo demo-data demo-audioset demo-downstream hear-validate test test-fast mutation bench clean-demo

venv: $(STAMP)

$(STAMP): $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
ifeq ($(strip $(TORCH_INDEX)),)
	$(PY) -m pip install --quiet -r $(LOCK)
else
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)" "torchaudio==$(TORCH_VERSION)" --index-url $(TORCH_INDEX)
	grep -v -E '^(nvidia-|cuda-|triton)' $(LOCK) > $(VENV)/lock-without-cuda-runtime.txt
	$(PY) -m pip install --quiet -r $(VENV)/lock-without-cuda-runtime.txt
endif
	$(PY) -m helpers.env_check
	touch $(STAMP)

# Start again from an empty .venv (what env_check advises when the environment drifted from the lock).
venv-rebuild:
	rm -rf $(VENV)
	$(MAKE) venv

env-check: venv
	$(PY) -m helpers.env_check

# Regenerate the lock from requirements.in: Linux x86_64, Python 3.11 (what CI tests). Commit both files.
# uv lives in its own folder so that the project's venv holds exactly the lock.
lock:
	test -x .venv-lock/bin/uv || ($(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install --quiet uv==$(UV_VERSION))
	.venv-lock/bin/uv pip compile requirements.in --python-platform x86_64-manylinux_2_28 --python-version 3.11 \
		-o $(LOCK)

HEAR_DEMO_TASK := demo_data/hear/demo_office_events-demo-full

# --reuse: a complete demo tree of this preset and seed (its demo_manifest.json says which) is kept as it is; an
# incomplete or different one is regenerated; a folder that is not a demo tree is never deleted.
demo-data: venv
	$(PY) -m data_util.demo --out demo_data --preset small --workers 2 --reuse
	$(PY) -m data_util.demo_hear --out $(HEAR_DEMO_TASK) --overwrite

# Downstream fine-tuning on the demo HEAR task (a small synthetic event task in the HEAR 2021 layout): full
# fine-tuning of a tiny ATST-Frame, then a linear probe of a tiny BEATs; each prints its onset-F1 / error-rate table.
demo-downstream: venv
	test -f $(HEAR_DEMO_TASK)/task_metadata.json || $(PY) -m data_util.demo_hear --out $(HEAR_DEMO_TASK)
	OMP_NUM_THREADS=1 $(PY) -m ex_downstream with demo arch=atst_frame trainer.max_epochs=40 trainer.check_val_every_n_epoch=5
	OMP_NUM_THREADS=1 $(PY) -m ex_downstream with demo arch=beats transformer_frozen=True optimizer.max_lr=0.01 trainer.max_epochs=40 trainer.check_val_every_n_epoch=5

# The HEAR 2021 validator on hear_api for the three architectures (tiny random checkpoints). hearvalidator declares
# Python < 3.9 and imports tensorflow, so it is installed without dependencies into .hear-validator/ (not the venv)
# and runs with a stand-in tensorflow module (helpers/hear_validate.py).
hear-validate: venv
	$(PY) -m helpers.hear_validate --install

# The demo: synthetic data in the real layout, checked by the data doctor, then the two-iteration recipe, shortened,
# with two tiny models side by side (stage 1 -> stage 2 -> store -> ensemble -> iteration 2 on the ensemble's
# pseudo-labels -> store -> ensemble -> evaluate). One BLAS thread per process is much faster for the tiny models'
# small matrices on a small CPU. The T4 data only (demo-data also writes the HEAR task, which the demo does not use).
demo: venv
	$(PY) -m helpers.env_check
	$(PY) -m data_util.demo --out demo_data --preset small --workers 2 --reuse
	$(PY) -m ex_stage1 check_data with demo
	$(PY) -m ex_stage2 check_data with demo
	OMP_NUM_THREADS=1 $(PY) -m helpers.demo_recipe

# AudioSet-strong pre-training on its synthetic source set (real formats): convert, check, a teacher, a KD student.
demo-audioset: venv
	$(PY) -m data_util.demo_audioset --out demo_data/audioset_strong/source --overwrite
	$(PY) -m ex_audioset_strong prepare_data with demo overwrite=True
	$(PY) -m ex_audioset_strong check_data with demo
	OMP_NUM_THREADS=1 $(PY) -m ex_audioset_strong with demo teacher arch=atst_frame
	OMP_NUM_THREADS=1 $(PY) -m ex_audioset_strong with demo kd_student arch=atst_frame \
		training_strong.kd_logits=demo_data/audioset_strong/source/kd/strong_kd.hdf5

test: venv
	$(PY) -m helpers.env_check
	$(PY) -m pytest

# Everything but the long runs (recipe training runs, the full cSEBBs grid); keeps the reference-fixture equivalence.
test-fast: venv
	$(PY) -m helpers.env_check
	$(PY) -m pytest -m "not slow"

# Mutation testing of the numeric core (mutmut, then hand-made mutants); hours on 2 cores, not part of CI.
# Report: .mutation/summary.json; docs/MUTATION.md holds the last one.
mutation: venv
	$(PY) -m tests.mutation

# Speed against the machine's limit: per arch time, memory, GFLOP/s and % of the matmul ceiling measured in the same
# run (models, training steps, inference real-time factor), then data loading and evaluation. See docs/PERFORMANCE.md.
bench: venv
	$(PY) -m bench.models
	$(PY) -m bench.train
	$(PY) -m bench.inference
	$(PY) -m bench.data
	$(PY) -m bench.eval

clean-demo:
	rm -rf demo_data outputs/demo
