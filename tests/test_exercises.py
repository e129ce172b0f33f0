"""The course's exercises (``mrcnn_np/course_solutions.py``): every one is solvable (its solution passes
the check against the project's reference), the check rejects wrong answers and unattempted stubs without
raising, and the notebooks use every exercise, each with a stub and no solution."""
import json
import pathlib
import re

import numpy as np
import pytest

from mrcnn_np import course
from mrcnn_np.course_solutions import EXERCISES, check

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
CHECK_CALL = re.compile(r"""check_exercise\(\s*["']([\w]+)["']\s*,\s*(\w+)\s*\)""")


def _code_cells(path):
    nb = json.loads(path.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def _uses():
    """{exercise name: [(notebook name, the learner's function name)]} from the notebooks' code cells."""
    out = {}
    for path in NOTEBOOKS:
        for src in _code_cells(path):
            for name, fn in CHECK_CALL.findall(src):
                out.setdefault(name, []).append((path.name, fn))
    return out


def _perturb(v, scale, by):
    """The solution's result with every number ``x`` turned into ``x * scale + by`` (a wrong answer)."""
    if isinstance(v, tuple):
        return tuple(x * scale + by for x in v)
    return v * scale + by


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_every_exercise_is_solvable(name, capsys):
    assert check(name, EXERCISES[name].solution)
    assert f"exercise {name}: correct" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_wrong_answers_are_rejected_and_located(name, capsys):
    sol = EXERCISES[name].solution
    for wrong in (lambda *a: _perturb(sol(*a), 1, 1),                  # off by one everywhere
                  lambda *a: _perturb(sol(*a), 1.01, 1e-3),            # a small relative error
                  lambda *a: _perturb(sol(*a), 0, 0)):                 # zeros
        assert check(name, wrong) is False
        out = capsys.readouterr().out
        assert "is wrong" in out and "max abs error" in out and "case " in out, out


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_an_unattempted_stub_is_reported_not_raised(name, capsys):
    def stub(*args):
        raise NotImplementedError  # your code here
    assert check(name, stub) is False
    assert f"exercise {name}: not attempted yet" in capsys.readouterr().out


def test_errors_and_shapes_are_reported_not_raised(capsys):
    assert check("box_iou", lambda a, b: 1 / 0) is False
    assert "raised ZeroDivisionError" in capsys.readouterr().out
    assert check("box_iou", lambda a, b: np.zeros(3)) is False
    assert "shape (3,), expected" in capsys.readouterr().out
    assert check("box_iou", lambda a, b: None) is False
    assert check("no_such_exercise", lambda: 0) is False
    assert "no such exercise" in capsys.readouterr().out


def test_the_check_does_not_let_the_learner_modify_the_cases():
    def mutating(a, b):
        a[:] = 0
        raise NotImplementedError
    assert check("box_iou", mutating) is False
    assert check("box_iou", EXERCISES["box_iou"].solution)


def test_course_exports_the_check():
    assert course.check_exercise is check


def test_every_exercise_is_used_in_its_notebook_and_every_used_name_exists():
    uses = _uses()
    assert set(uses) <= set(EXERCISES), f"unknown exercises: {set(uses) - set(EXERCISES)}"
    assert set(EXERCISES) <= set(uses), f"exercises no notebook uses: {set(EXERCISES) - set(uses)}"
    for name, where in uses.items():
        assert [nb[:2] for nb, _ in where] == [EXERCISES[name].notebook], (name, where)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_hold_stubs_not_solutions(path):
    code = _code_cells(path)
    checks = [(i, fn) for i, src in enumerate(code) for _, fn in CHECK_CALL.findall(src)]
    assert 1 <= len(checks) <= 3, f"{path.name}: expected 1-3 exercises, found {len(checks)}"
    for i, fn in checks:
        stub = next((src for src in code[:i] if re.search(rf"^def {fn}\(", src, re.M)), None)
        assert stub is not None, f"{path.name}: no stub `def {fn}(` before its check"
        body = stub.split(f"def {fn}(", 1)[1]
        assert "raise NotImplementedError  # your code here" in body, f"{path.name}: {fn} is not a stub"
        assert "return" not in body, f"{path.name}: {fn} holds a solution"
    assert not any("course_solutions" in src for src in code)     # the solutions stay out of sight


def test_exercises_are_checked_on_numpy_under_a_gpu_backend(capsys):
    """A notebook run with MRCNN_BACKEND=cupy checks its exercises too: the cases are host arrays, so
    the check runs the learner's code and the reference on the numpy backend, then puts the
    notebook's backend back."""
    import mrcnn_np
    cupy_on_cpu = pytest.importorskip("cupy_on_cpu")
    if cupy_on_cpu.GXX is None:
        pytest.skip("g++ not found: the CuPy stand-in needs it")
    import cupy_strict
    with cupy_strict.activate():
        for name in ("bilinear_sample", "bilinear_sample_backward", "sigmoid_mask_backward"):
            assert check(name, EXERCISES[name].solution), capsys.readouterr().out
            assert mrcnn_np.get_backend().name == "cupy"
