# Two commands do all the set-up: `make demo` (the main job) and `make test` (the tests).
# Each creates or refreshes .venv from requirements*.txt, so a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

NB_STAMP := $(VENV)/.notebooks-installed

.PHONY: demo test test-gpu test-gpu-emulated gradcheck bench notebooks course experiments clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# the numba backend by default; MRCNN_BACKEND=numpy make demo runs the NumPy reference
demo: $(STAMP)
	$(VENV)/bin/mrcnn-np demo --backend $${MRCNN_BACKEND:-numba}

test: $(STAMP)
	$(PY) -m pytest -q

# The GPU tests (tests marked `gpu`), on a machine with an NVIDIA GPU: installs the GPU extra
# (requirements-gpu.txt: CuPy, numba-cuda) into .venv once, then runs them with MRCNN_REQUIRE_GPU=1,
# so a backend that cannot start FAILS here instead of skipping. Not a prerequisite of `make test`
# (CI has no GPU; there the same tests skip with the reason).
GPU_STAMP := $(VENV)/.installed-gpu

$(GPU_STAMP): $(STAMP) requirements-gpu.txt
	$(PY) -m pip install --quiet -r requirements-gpu.txt
	touch $(GPU_STAMP)

test-gpu: $(GPU_STAMP)
	MRCNN_REQUIRE_GPU=1 $(PY) -m pytest -q -m gpu

# The same GPU parity tests without a GPU: CuPy replaced by tests/cupy_on_cpu.py (NumPy arrays, the
# .cu kernels compiled by g++ with kernels/cuda_cpu_emu.h). Slow (about 2 minutes), needs g++.
test-gpu-emulated: $(STAMP)
	MRCNN_CUPY_ON_CPU=1 $(PY) -m pytest -q tests/test_gpu_parity.py

gradcheck: $(STAMP)
	$(VENV)/bin/mrcnn-np gradcheck

bench: $(STAMP)
	$(PY) benchmarks/bench_ops.py

# The course: JupyterLab on notebooks/, with this venv's Python as the kernel
# (MRCNN_BACKEND=cupy make notebooks runs them on a GPU backend; MRCNN_FAST=1 makes them quick;
# JUPYTER_ARGS="--no-browser --allow-root" e.g. in a container).
$(NB_STAMP): $(STAMP) requirements-notebooks.txt
	$(PY) -m pip install --quiet -r requirements-notebooks.txt
	touch $(NB_STAMP)

JUPYTER_ARGS ?=
notebooks: $(NB_STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(JUPYTER_ARGS)

# The course as committed: every notebook executed in full mode on numba, with the demo's checkpoint
# (trained first by `make demo` if runs/demo has none), its outputs written into notebooks/*.ipynb
# with the hash of its code (tests/test_notebooks.py checks that they match). COURSE_ARGS="notebooks/05_multi_task_loss.ipynb"
# re-executes one.
COURSE_ARGS ?=
course: $(STAMP)
	test -f runs/demo/checkpoint.npz || $(MAKE) demo
	$(PY) -m mrcnn_np.course_build $(COURSE_ARGS)

# The paper's Table 2 ablations at toy scale -> benchmarks/results/ablations.json
# (EXPERIMENT_ARGS="--jobs 12 --steps 400" etc.; see benchmarks/ablations.py)
experiments: $(STAMP)
	$(PY) benchmarks/ablations.py $(EXPERIMENT_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
