# Two commands do all the set-up: `make demo` (the main job) and `make test` (the tests).
# Each creates or refreshes .venv from requirements*.txt, so a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test gradcheck bench clean

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

gradcheck: $(STAMP)
	$(VENV)/bin/mrcnn-np gradcheck

bench: $(STAMP)
	$(PY) benchmarks/bench_ops.py

clean:
	rm -rf $(VENV) build *.egg-info
