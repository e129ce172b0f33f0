"""SGD, the learning-rate schedule and gradient clipping, checked against hand arithmetic."""
import math

import numpy as np
import pytest

from mrcnn_np.nn import Parameter
from mrcnn_np.optim import SGD, LRSchedule, clip_grad_norm, default_no_decay, global_grad_norm


def _param(values, grad):
    p = Parameter(np.array(values, np.float64))
    p.grad[...] = grad
    return p


def test_two_sgd_steps_with_momentum_and_weight_decay_by_hand():
    # lr 0.1, mu 0.9, wd 0.1; w starts at 1.0 with gradient 0.5 both steps; the bias gets no decay.
    w, b = _param([1.0], 0.5), _param([2.0], 0.5)
    opt = SGD({"head.weight": w, "head.bias": b}, lr=0.1, momentum=0.9, weight_decay=0.1)
    opt.step()
    # weight: g = 0.5 + 0.1*1.0 = 0.6; v = 0.6; w = 1.0 - 0.1*0.6 = 0.94
    # bias:   g = 0.5;               v = 0.5; b = 2.0 - 0.05      = 1.95
    np.testing.assert_allclose(w.data, [0.94], rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.data, [1.95], rtol=0, atol=1e-12)
    opt.step(lr=0.1)
    # weight: g = 0.5 + 0.1*0.94 = 0.594; v = 0.9*0.6 + 0.594 = 1.134; w = 0.94 - 0.1134 = 0.8266
    # bias:   g = 0.5;                    v = 0.9*0.5 + 0.5   = 0.95;  b = 1.95 - 0.095  = 1.855
    np.testing.assert_allclose(w.data, [0.8266], rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.data, [1.855], rtol=0, atol=1e-12)
    np.testing.assert_allclose(opt.state_dict()["head.weight"], [1.134], rtol=0, atol=1e-12)
    assert w.grad[0] == 0.5                     # weight decay does not touch the stored gradient


def test_nesterov_step_by_hand():
    w = _param([1.0], 1.0)
    opt = SGD({"w": w}, lr=0.5, momentum=0.5, weight_decay=0.0, nesterov=True)
    opt.step()          # v = 1; d = g + mu*v = 1.5; w = 1 - 0.75
    opt.step()          # v = 0.5 + 1 = 1.5; d = 1 + 0.75 = 1.75; w = 0.25 - 0.875
    np.testing.assert_allclose(w.data, [-0.625], rtol=0, atol=1e-12)


def test_step_lr_argument_overrides_and_float32_stays_float32():
    p = Parameter(np.ones(3, np.float32))
    p.grad[...] = 1.0
    opt = SGD({"w": p}, lr=1.0, momentum=0.0, weight_decay=0.0)
    opt.step(lr=0.25)
    assert p.data.dtype == np.float32 and np.all(p.data == 0.75)


def test_default_no_decay_names():
    assert default_no_decay("backbone.stem.conv.bias")
    assert default_no_decay("backbone.stem.norm.weight")
    assert default_no_decay("fpn.GroupNorm3.weight")
    assert not default_no_decay("backbone.stem.conv.weight")
    custom = SGD({"a.gn.weight": _param([1.0], 0.0)}, lr=1.0, weight_decay=0.5,
                 no_decay=lambda name: ".gn." in name)
    custom.step()
    assert custom.params["a.gn.weight"].data[0] == 1.0


def test_state_round_trip_continues_identically():
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(4) for _ in range(4)]

    def make():
        return {"w": Parameter(np.arange(4.0)), "b.bias": Parameter(np.ones(4))}

    ref_params = make()
    ref = SGD(ref_params, lr=0.1)
    for g in grads:
        for p in ref_params.values():
            p.grad[...] = g
        ref.step()

    first = make()
    opt = SGD(first, lr=0.1)
    for g in grads[:2]:
        for p in first.values():
            p.grad[...] = g
        opt.step()
    state = opt.state_dict()
    second = {k: Parameter(p.data.copy()) for k, p in first.items()}
    opt2 = SGD(second, lr=0.1)
    opt2.load_state_dict(state)
    for g in grads[2:]:
        for p in second.values():
            p.grad[...] = g
        opt2.step()
    for k in ref_params:
        assert np.array_equal(second[k].data, ref_params[k].data)


def test_load_state_dict_names_the_bad_entry():
    opt = SGD({"w": Parameter(np.zeros(3))}, lr=0.1)
    with pytest.raises(ValueError, match="'w'.*shape \\(2,\\).*\\(3,\\)"):
        opt.load_state_dict({"w": np.zeros(2)})
    with pytest.raises(ValueError, match="missing buffer for parameter 'w'"):
        opt.load_state_dict({})
    with pytest.raises(ValueError, match="unknown parameter 'v'"):
        opt.load_state_dict({"w": np.zeros(3), "v": np.zeros(3)})


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=-1.0), "lr"), (dict(lr=0.1, momentum=float("nan")), "momentum"),
    (dict(lr=0.1, weight_decay=-1e-4), "weight_decay"),
    (dict(lr=0.1, momentum=0, nesterov=True), "nesterov"),
])
def test_sgd_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGD({"w": Parameter(np.zeros(1))}, **kwargs)


def test_cosine_schedule_with_warmup_at_known_steps():
    s = LRSchedule(0.1, total_steps=100, warmup_steps=10, warmup_factor=0.001, kind="cosine")
    assert s(0) == pytest.approx(0.1 * 0.001)                              # w = f, d = 1
    w5 = 0.001 + 0.999 * 5 / 10
    assert s(5) == pytest.approx(0.1 * w5 * 0.5 * (1 + math.cos(math.pi * 0.05)))
    assert s(50) == pytest.approx(0.05)                                    # half-way: d = 1/2
    assert s(100) == pytest.approx(0.0, abs=1e-15)
    assert s(99) > 0


def test_step_schedule_at_known_steps():
    s = LRSchedule(0.02, total_steps=90, warmup_steps=0, kind="step", steps=(60, 80), gamma=0.1)
    assert [s(t) for t in (0, 59, 60, 79, 80, 89)] == pytest.approx([0.02, 0.02, 0.002, 0.002, 2e-4, 2e-4])
    warm = LRSchedule(1.0, total_steps=10, warmup_steps=4, warmup_factor=0.2, kind="step", steps=(2,))
    # t=1: w = 0.2 + 0.8/4 = 0.4, before the milestone; t=3: w = 0.8, after it: 0.08
    assert [warm(t) for t in (0, 1, 3, 4)] == pytest.approx([0.2, 0.4, 0.08, 0.1])


@pytest.mark.parametrize("kwargs, match", [
    (dict(base_lr=0.0, total_steps=10), "base_lr"), (dict(base_lr=0.1, total_steps=0), "total_steps"),
    (dict(base_lr=0.1, total_steps=10, kind="linear"), "kind"),
    (dict(base_lr=0.1, total_steps=10, kind="step", steps=(8, 4)), "steps"),
    (dict(base_lr=0.1, total_steps=10, warmup_factor=0.0), "warmup_factor"),
])
def test_schedule_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LRSchedule(**kwargs)


def test_clip_grad_norm_scales_to_max_norm_and_returns_the_norm_before():
    a, b = _param([0.0, 0.0], [3.0, 0.0]), _param([0.0], [4.0])
    assert global_grad_norm([a, b]) == pytest.approx(5.0)
    assert clip_grad_norm({"a": a, "b": b}, 1.0) == pytest.approx(5.0)
    assert global_grad_norm([a, b]) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(a.grad, [0.6, 0.0], rtol=1e-5)
    assert clip_grad_norm([a, b], 10.0) == pytest.approx(1.0, rel=1e-5)   # below max: unchanged
    np.testing.assert_allclose(a.grad, [0.6, 0.0], rtol=1e-5)
    c = _param([0.0], [np.nan])
    assert math.isnan(clip_grad_norm([c], 1.0))
