# Two commands do all the set-up: `make demo` (the main job) and `make test` (the tests).
# Each creates or refreshes .venv from requirements*.txt, so a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

NB_STAMP := $(VENV)/.notebooks-installed

.PHONY: demo test gradcheck bench notebooks experiments clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mrcnn-np demo

test: $(STAMP)
	$(PY) -m pytest -q

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

# The paper's Table 2 ablations at toy scale -> benchmarks/results/ablations.json
# (EXPERIMENT_ARGS="--jobs 12 --steps 400" etc.; see benchmarks/ablations.py)
experiments: $(STAMP)
	$(PY) benchmarks/ablations.py $(EXPERIMENT_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
