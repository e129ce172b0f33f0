"""Shared by tests/test_gpu_parity.py (real CuPy on a GPU) and tests/test_cupy_launchers_cpu.py (the
CPU stand-in): run an op's forward and backward under the active GPU backend through
``mrcnn_np.functional`` and compare with ``.reference`` on the host."""
from __future__ import annotations

import numpy as np

import mrcnn_np
from mrcnn_np import dispatch
from mrcnn_np import functional as F


def tol(dt):
    return dict(rtol=1e-5, atol=1e-5) if dt == np.float32 else dict(rtol=1e-10, atol=1e-12)


def _gpu(cp, a):
    return cp.asarray(a) if isinstance(a, np.ndarray) else a


def _host(a):
    return a.get() if hasattr(a, "get") and type(a).__module__.startswith("cupy") else np.asarray(a)


def _compare(got, want, dt, what):
    if want is None:
        assert got is None, what
        return
    got = _host(got)
    assert got.shape == np.shape(want), (what, got.shape, np.shape(want))
    np.testing.assert_allclose(got, want, err_msg=what, **tol(dt))


def check_pair(cp, name, args, kwargs, dt, dout=None, seed=0):
    """Forward and backward of ``F.<name>_*`` under cupy against ``.reference`` on the host."""
    fwd, bwd = getattr(F, f"{name}_forward"), getattr(F, f"{name}_backward")
    want, ref_cache = fwd.reference(*args, **kwargs)
    got, cache = fwd(*[_gpu(cp, a) for a in args], **kwargs)
    assert isinstance(cache, dispatch.KernelCache) and cache.backend == "cupy"
    if np.ndim(want):
        assert isinstance(got, cp.ndarray), type(got)
    _compare(got, want, dt, f"{name}_forward")
    if dout is None:
        rng = np.random.default_rng(seed)
        dout = rng.standard_normal(np.shape(want)).astype(dt)
    dwant = bwd.reference(dout, ref_cache)
    dgot = bwd(_gpu(cp, dout), cache)
    if isinstance(dwant, tuple):
        for i, (g, w) in enumerate(zip(dgot, dwant)):
            _compare(g, w, dt, f"{name}_backward[{i}]")
    else:
        _compare(dgot, dwant, dt, f"{name}_backward")


def _rois(rng, n_batch, h, w, scale, r, dt):
    img_w, img_h = w / scale, h / scale
    b = rng.integers(0, n_batch, r)
    x1 = rng.uniform(-0.3 * img_w, img_w, r)
    y1 = rng.uniform(-0.3 * img_h, img_h, r)
    rois = np.stack([b, x1, y1, x1 + rng.uniform(0, 0.8 * img_w, r),
                     y1 + rng.uniform(0, 0.8 * img_h, r)], axis=1)
    rois[0, 1:] = [-40, -30, -20, -10]
    rois[1, 1:] = [img_w + 5, img_h + 5, img_w + 9, img_h + 20]
    rois[2, 3:] = rois[2, 1:3]
    rois[3, 1:] = [0, 0, img_w, img_h]
    rois[4, 1:] = [-1 / scale, -1 / scale, (w + 1) / scale, (h + 1) / scale]
    return rois.astype(dt)


def check_training_step(cp):
    """The tiny model's training step (float64) under the active GPU backend (module ``cp``): its
    losses and every parameter's gradient equal the numpy backend's. Leaves numpy active."""
    from mrcnn_np.model import build_model, get_config
    from test_model import fixed_proposals, toy_batch

    cfg = get_config("tiny", dtype="float64")
    images, targets = toy_batch(cfg)
    props = fixed_proposals(targets)

    def step(xp):
        model = build_model(cfg, seed=1)
        imgs = xp.asarray(images)
        tgts = [{k: xp.asarray(v) for k, v in t.items()} for t in targets]
        prps = [xp.asarray(p) for p in props]
        losses = model.forward_train(imgs, tgts, np.random.default_rng(5), proposals=prps)
        model.zero_grad()
        model.backward()
        return losses, {k: _host(p.grad) for k, p in model.named_parameters().items()}

    losses, grads = step(cp)                    # the GPU backend (the caller made it active)
    mrcnn_np.set_backend("numpy")
    ref_losses, ref_grads = step(np)
    for k in ref_losses:
        np.testing.assert_allclose(losses[k], ref_losses[k], rtol=1e-9, err_msg=k)
    for k in ref_grads:
        scale = max(np.abs(ref_grads[k]).max(), 1e-12)
        np.testing.assert_allclose(grads[k] / scale, ref_grads[k] / scale, atol=1e-9, err_msg=k)


def assert_masks_match(got, masks, boxes, image_size, threshold=0.5):
    """``got`` (bool) equals ``postprocess.paste_masks``, except possibly at pixels whose bilinear value
    is within 1e-6 of the threshold (the reference sums with a GEMM, the kernel with two terms)."""
    from mrcnn_np.detection import postprocess
    want = postprocess.paste_masks(masks, boxes, image_size, threshold)
    got = _host(got)
    assert got.dtype == bool and got.shape == want.shape
    at_threshold = (postprocess.paste_masks(masks, boxes, image_size, threshold - 1e-6)
                    != postprocess.paste_masks(masks, boxes, image_size, threshold + 1e-6))
    bad = (got != want) & ~at_threshold
    assert not bad.any(), f"{int(bad.sum())} pixels differ, first {np.argwhere(bad)[:5].tolist()}"
