"""The dispatch: a backend's kernel replaces the reference per op, after the reference's own argument
check and the boundary's array checks; a kernel's cache goes back to the same backend's backward."""
import numpy as np
import pytest

import mrcnn_np
from mrcnn_np import dispatch
from mrcnn_np import functional as F
from mrcnn_np.ops import norm


@pytest.fixture
def fake_numba_kernels(monkeypatch):
    """Temporarily replace the numba backend's group_norm kernels with recording fakes."""
    calls = []

    def forward(x, gamma, beta, num_groups, eps):
        calls.append(("forward", x, gamma, beta))
        out, cache = norm.group_norm_forward(x, gamma, beta, num_groups, eps)
        return out + 1.0, ("fake", cache)           # + 1: proves the kernel's output is returned

    def backward(dout, cache):
        calls.append(("backward", dout))
        tag, inner = cache
        assert tag == "fake"
        return norm.group_norm_backward(dout, inner)

    mrcnn_np.set_backend("numba")                   # load the real kernels first: the fakes replace them
    kernels = dict(dispatch._KERNELS)
    kernels[("numba", "group_norm_forward")] = forward
    kernels[("numba", "group_norm_backward")] = backward
    monkeypatch.setattr(dispatch, "_KERNELS", kernels)
    # the fakes read contiguous NCHW: drop the real kernels' any_layout flag for this pair
    monkeypatch.setattr(dispatch, "_LAYOUT_ANY", dispatch._LAYOUT_ANY
                        - {("numba", "group_norm_forward"), ("numba", "group_norm_backward")})
    mrcnn_np.set_backend("numba")
    yield calls
    mrcnn_np.set_backend("numpy")


def _gn_inputs(dtype=np.float32):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((2, 4, 3, 3)).astype(dtype), np.ones(4, dtype), np.zeros(4, dtype))


def test_kernel_runs_under_its_backend_and_reference_otherwise(fake_numba_kernels):
    x, g, b = _gn_inputs()
    ref, _ = norm.group_norm_forward(x, g, b, 2)
    out, cache = F.group_norm_forward(x, g, b, 2)
    np.testing.assert_allclose(out, ref + 1.0, rtol=1e-6)
    assert isinstance(cache, dispatch.KernelCache) and cache.backend == "numba"
    mrcnn_np.set_backend("numpy")
    out_ref, cache_ref = F.group_norm_forward(x, g, b, 2)
    np.testing.assert_array_equal(out_ref, ref)
    # the backward goes where its cache was made, even though numpy is active now
    dx = F.group_norm_backward(np.ones_like(out), cache)[0]
    assert fake_numba_kernels[-1][0] == "backward"
    np.testing.assert_allclose(dx, norm.group_norm_backward(np.ones_like(out), cache_ref)[0], atol=1e-6)


def test_reference_check_runs_before_the_kernel(fake_numba_kernels):
    x, g, b = _gn_inputs()
    with pytest.raises(ValueError, match="num_groups: 3 does not divide the 4 channels"):
        F.group_norm_forward(x, g, b, 3)
    with pytest.raises(ValueError, match="x: expected a float32 or float64 array"):
        F.group_norm_forward(x.astype(np.int32), g, b, 2)
    assert fake_numba_kernels == []                # the kernel never saw the bad input


def test_boundary_makes_arrays_contiguous_and_one_float_dtype(fake_numba_kernels):
    x, g, b = _gn_inputs()
    x_view = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)   # NCHW view
    assert not x_view.flags.c_contiguous
    F.group_norm_forward(x_view, g.astype(np.float64), b, 2)
    _, xk, gk, bk = fake_numba_kernels[-1]
    assert xk.flags.c_contiguous and gk.dtype == np.float32 and bk.dtype == np.float32
    np.testing.assert_array_equal(xk, x)


def test_an_array_of_another_module_is_a_clear_error(fake_numba_kernels):
    class NotNumpy:                                 # quacks like an array, is not numpy's
        dtype, shape, strides, ndim = np.dtype("float32"), (4,), (4,), 1
    x, g, b = _gn_inputs()
    with pytest.raises(ValueError, match=r"gamma: the 'numba' backend's kernel for group_norm_forward "
                                         r"expects a numpy array"):
        F.group_norm_forward(x, NotNumpy(), b, 2)


def test_a_backend_must_register_both_halves(monkeypatch):
    kernels = dict(dispatch._KERNELS)
    kernels[("numba", "relu_forward")] = lambda x: (x, None)
    monkeypatch.setattr(dispatch, "_KERNELS", kernels)
    with pytest.raises(RuntimeError, match="relu_forward without relu_backward"):
        dispatch.check_pairs_complete("numba")


def test_every_functional_name_is_dispatched_and_keeps_its_reference():
    for name in F.__all__:
        f = getattr(F, name)
        assert hasattr(f, "reference"), name
        assert f.__name__ == f.reference.__name__
    assert set(dispatch.OPS) == set(F.__all__)


def test_the_fast_binding_equals_inspect_bind():
    import inspect
    def ref(a, b, c=3, d=None):
        pass
    bind = dispatch._binder(ref)
    sig = inspect.signature(ref)
    for args, kwargs in [((1, 2), {}), ((1,), {"b": 2}), ((1, 2, 4), {"d": 5}), ((), {"a": 1, "b": 2}),
                         ((1, 2, 3, 4), {})]:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        assert bind(args, kwargs) == dict(bound.arguments)
    for args, kwargs in [((1,), {}), ((1, 2), {"a": 1}), ((1, 2), {"e": 1}), ((1, 2, 3, 4, 5), {})]:
        with pytest.raises(TypeError):
            bind(args, kwargs)
