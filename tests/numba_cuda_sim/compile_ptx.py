"""Compile every ``numba-cuda`` kernel to PTX for a real GPU, on a machine without one.

The simulator runs kernels as Python, so it cannot tell whether Numba's CUDA compiler accepts them
(an unsupported call, a type that does not unify) or whether float32 kernels really compute in
float32. This script drives every registered kernel through :mod:`mrcnn_np.functional` on small NumPy
inputs with the launch replaced by ``cuda.compile_ptx`` for the argument types of that launch (the
types a CuPy array of the same dtype and layout gets), for compute capability 9.0 (H100). It needs
the ``numba-cuda`` package and NVRTC (``pip install numba-cuda nvidia-cuda-nvrtc``, CUDA_HOME set to a
toolkit with libNVVM), not a GPU. It prints each kernel's float64 instruction count in its float32
build, which must be 0 except where the reference itself computes in float64 (noted below), and
its FMA count, which must be 0 in the IoU kernels. Exit status: 0 all compiled, 1 a kernel failed, 3 no CUDA compiler here.

    CUDA_HOME=/usr/local/cuda python tests/numba_cuda_sim/compile_ptx.py
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# float64 work a float32 kernel is meant to have: NMS compares IoUs with the threshold as a float64
# (as the reference does); RoIPool's bin size and the paste's pixel coordinates are float64 in
# the reference too.
F64_EXPECTED = {"suppression_mask", "forward@roi_pool", "paste"}
# kernels that must round like the reference, so no multiply may be fused into an FMA (IoUs compared
# with a threshold; see _launch.unfused_multiply)
NO_FMA = {"suppression_mask", "iou"}


def main() -> int:
    from numba import cuda, typeof

    from mrcnn_np import backend, functional as F
    from mrcnn_np.backends import numba_cuda
    from mrcnn_np.backends.numba_cuda import _launch

    if _launch.SIMULATED:
        print("unset NUMBA_ENABLE_CUDASIM: this compiles for a real GPU")
        return 2
    try:                                             # is the compiler there (NVVM, NVRTC)?
        from numba import float32
        cuda.compile_ptx(lambda a: None, (float32[::1],), cc=(9, 0))
    except Exception as exc:
        print(f"cannot compile CUDA here ({type(exc).__name__}: {str(exc)[:300]})")
        return 3
    # Device functions (@cuda.jit(device=True)) are compiled for the current device's compute
    # capability; there is no device here, so name the H100's.
    import types
    from numba.cuda import dispatcher
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
    backend._loaded["numba-cuda"] = backend.Backend("numba-cuda", np, gpu=False)  # NumPy arrays
    numba_cuda.load()
    seen, failures = {}, []

    def compile_instead(kernel, blocks, threads, *args):
        sig = tuple(typeof(a) for a in args)
        mod = kernel.py_func.__module__.rsplit(".", 1)[-1]
        name = f"{kernel.py_func.__name__}@{mod}"
        key = (name, sig)
        if key in seen:
            return
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
        except Exception as exc:          # report every kernel, not just the first failure
            failures.append(name)
            print(f"FAIL {name} {sig}: {type(exc).__name__}: {str(exc)[:2000]}")
            seen[key] = None
            return
        f32 = any(getattr(t, "dtype", None) == typeof(np.float32(0)) or t == typeof(np.float32(0))
                  for t in sig)
        f64_ops = len(re.findall(r"^\s*\S+\.f64\b", ptx, flags=re.M)) if f32 else 0
        fmas = len(re.findall(r"^\s*fma\.", ptx, flags=re.M))
        seen[key] = f64_ops
        note = ""
        if f32 and f64_ops and not ({name, kernel.py_func.__name__} & F64_EXPECTED):
            failures.append(name)
            note = "  <- float64 instructions in a float32 kernel"
        if fmas and kernel.py_func.__name__ in NO_FMA:
            failures.append(name)
            note += "  <- fused multiply-adds in a kernel that must round like the reference"
        print(f"ok   {name:34s} {'float32' if f32 else 'float64'}  f64 instructions: {f64_ops:3d}  fma: {fmas}{note}")

    for mod in numba_cuda.MODULES:
        m = sys.modules[f"mrcnn_np.backends.numba_cuda.{mod}"]
        if hasattr(m, "launch_blocks"):
            m.launch_blocks = compile_instead
    _launch.launch_blocks = compile_instead          # what launch() calls

    from mrcnn_np.backend import set_backend
    set_backend("numba-cuda")
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        x = rng.standard_normal((2, 4, 6, 6)).astype(dt)
        rois = np.array([[0, 1, 1, 9, 9]], dt)
        out, c = F.roi_align_forward(x, rois, 2, 0.5, 0, True)
        F.roi_align_backward(out, c)
        out, c = F.roi_pool_forward(x, rois, 2, 0.5)
        F.roi_pool_backward(out, c)
        b = np.array([[0, 0, 2, 2], [1, 1, 3, 3]], dt)
        F.nms(b, np.array([1, 2], dt), 0.5)
        F.batched_nms(b, np.array([1, 2], dt), np.array([0, 1]), 0.5)
        F.box_iou(b, b)
        w = rng.standard_normal((3, 4, 3, 3)).astype(dt)
        out, c = F.conv2d_forward(x, w, np.zeros(3, dt), 2, 1)
        F.conv2d_backward(out, c)
        out, c = F.conv_transpose2d_forward(x, w.transpose(1, 0, 2, 3).copy(), None, 2, 0)
        F.conv_transpose2d_backward(out, c)
        out, c = F.group_norm_forward(x, np.ones(4, dt), np.zeros(4, dt), 2)
        F.group_norm_backward(out, c)
        out, c = F.max_pool2d_forward(x, 3, 2, 1)
        F.max_pool2d_backward(out, c)
        z = rng.standard_normal((3, 4)).astype(dt)
        _, c = F.softmax_cross_entropy_forward(z, np.array([0, 1, 3]))
        F.softmax_cross_entropy_backward(1.0, c)
        _, c = F.smooth_l1_forward(z, z * 0, 1 / 9)
        F.smooth_l1_backward(1.0, c)
        _, c = F.sigmoid_bce_with_logits_forward(z, (z > 0).astype(dt))
        F.sigmoid_bce_with_logits_backward(1.0, c)
        from mrcnn_np.backends.numba_cuda.paste import paste_masks
        paste_masks(rng.random((1, 4, 4)).astype(dt), np.array([[1.0, 1.0, 5.0, 6.0]]), (8, 8))
    print(f"{len(seen)} kernel builds compiled, {len(failures)} problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
