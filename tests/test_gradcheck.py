"""Every layer's backward against float64 central differences (the independent truth)."""
import numpy as np
import pytest

from mrcnn_np import functional as F
from mrcnn_np.gradcheck import gradcheck, numerical_gradient, op_checks, relative_error

TOL = 1e-6


@pytest.mark.parametrize("check", op_checks(), ids=lambda c: c.name)
def test_op_gradient_matches_finite_differences(check):
    errors = check.run()
    assert errors, "nothing was checked"
    for name, err in errors.items():
        assert err < TOL, f"{check.name}: d/d{name} relative error {err:.2e}"


def test_every_functional_pair_is_in_the_table():
    checked = {c.forward.__name__ for c in op_checks()}
    pairs = {n for n in F.__all__ if n.endswith("_forward")}
    assert pairs == checked


def test_gradcheck_catches_a_wrong_backward():
    x = np.random.default_rng(0).standard_normal((3, 4))
    w = np.random.default_rng(1).standard_normal((2, 4))

    def wrong_backward(dout, cache):
        dx, dw, db = F.linear_backward(dout, cache)
        return dx * 1.01, dw, db                     # a 1 % error must not pass

    errs = gradcheck(F.linear_forward, wrong_backward, (x, w, np.zeros(2)), {"x": 0, "w": 1})
    assert errs["x"] > 1e-3 and errs["w"] < TOL


def test_numerical_gradient_of_a_known_function():
    x = np.array([1.0, -2.0, 3.0])
    g = numerical_gradient(lambda: float((x ** 3).sum()), x)
    np.testing.assert_allclose(g, 3 * x ** 2, rtol=1e-8)
    np.testing.assert_array_equal(x, [1.0, -2.0, 3.0])      # restored after perturbation


def test_relative_error_scale():
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.array([1.0, 0.0]), np.array([1.0, 1e-3])) == pytest.approx(1e-3)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 3])
def test_roi_align_gradient_on_awkward_rois(aligned, sampling_ratio):
    rng = np.random.default_rng(7)
    feats = rng.standard_normal((2, 2, 5, 6))
    # straddling pixel and bin boundaries, sticking out of every side, tiny, and the whole map
    rois = np.array([[0, 0.5, 0.5, 3.5, 2.5], [0, 1.25, 0.75, 4.1, 4.9], [1, -2.0, -1.5, 2.2, 3.1],
                     [1, 3.7, 2.6, 9.0, 7.5], [0, 2.2, 2.2, 2.4, 2.3], [1, 0, 0, 6, 5],
                     [0, -6.0, -6.0, -2.5, -2.5]])
    errs = gradcheck(F.roi_align_forward, F.roi_align_backward,
                     (feats, rois, (2, 3), 1.0, sampling_ratio, aligned), {"features": 0})
    assert errs["features"] < TOL

