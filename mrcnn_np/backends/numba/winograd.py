"""3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3): 2.25x fewer multiplications
than the direct (im2col + GEMM) form, for the large convs of ResNet-50-FPN (reference:
:func:`mrcnn_np.ops.conv.conv2d_forward`, the same function up to rounding).

One output tile ``Y`` (2 x 2) of one channel pair comes from a 4 x 4 input patch ``d`` (stride 2 between
tiles, the padding of 1 included) and the 3 x 3 filter ``g`` as (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016)::

    Y = A^T [ (G g G^T) * (B^T d B) ] A            (* elementwise, 4 x 4)

    B^T = | 1  0 -1  0 |      G = | 1    0    0  |      A^T = | 1  1  1  0 |
          | 0  1  1  0 |          | 1/2  1/2  1/2|            | 0  1 -1 -1 |
          | 0 -1  1  0 |          | 1/2 -1/2  1/2|
          | 0  1  0 -1 |          | 0    0    1  |

Summed over input channels, the elementwise product becomes 16 independent matrix products, one per
position ``xi`` of the 4 x 4 transform: ``M[xi] = V[xi] (tiles, C_in) @ U[xi] (C_in, C_out)`` with
``U = G g G^T`` (the filter, transformed once per call) and ``V = B^T d B`` (each input tile). A
direct 3x3 conv multiplies 9 numbers per output pixel and channel pair, this 16 per 4 pixels: 2.25x
fewer, in GEMMs of the same shape class. The transforms are additions only, done by Numba over tiles
in chunks that stay near the cache.

Error: the transforms add and subtract a few numbers, so results differ from the direct form by a
few float32 ulps (measured ~8e-7 of the output's scale against ~1e-7 for im2col); in float64 they
agree to ~1e-15. Used for the forward only: the backward of the same conv stays im2col's (it is the
same linear map).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._jit import kernel

#: Winograd is used when the conv is this big (output pixels over the batch) and at least this wide.
#: Measured on the 2-core machine (median of 7, float32), Winograd / im2col: ResNet-50's P2
#: (200 x 304, 256 channels) 0.21 s / 0.34 s, the mask head of 100 RoIs (14 x 14, 256) 0.08 / 0.19,
#: P3 (100 x 152) 0.07 / 0.14, 4 x 32 x 32 at 64 channels 0.0023 / 0.0031; below ~4k pixels it
#: loses (P5 of 25 x 38 at 512 channels: 0.056 / 0.024), as under 64 channels.
MIN_PIXELS = 4096
MIN_CHANNELS = 64
_CHUNK_ELEMENTS = 1 << 22          # numbers in one chunk's V (16 MiB in float32)


def applies(n, c_in, c_out, out_h, out_w, kh, kw, stride, padding) -> bool:
    """Whether :func:`conv3x3` takes this conv (3x3, stride 1, padding 1, big and wide enough)."""
    return (kh == kw == 3 and stride == 1 and padding == 1 and min(c_in, c_out) >= MIN_CHANNELS
            and n * out_h * out_w >= MIN_PIXELS)


@kernel
def _filter_transform(w, U):
    """w (K, C, 3, 3) -> U (16, C, K): U[4a + b, c, k] = (G g G^T)[a, b] for g = w[k, c]."""
    k_n, c_n = w.shape[0], w.shape[1]
    T = w.dtype.type
    half = T(0.5)
    for task in prange(k_n * c_n):
        c, k = task // k_n, task % k_n                     # k fastest: U[xi, c, :] is written in order
        for j in range(3):                                 # G g: (4, 3), column j
            t0 = w[k, c, 0, j]
            t1 = half * (w[k, c, 0, j] + w[k, c, 1, j] + w[k, c, 2, j])
            t2 = half * (w[k, c, 0, j] - w[k, c, 1, j] + w[k, c, 2, j])
            t3 = w[k, c, 2, j]
            # stash G g in U's rows for now; (G g) G^T is taken below, row a of G g at a time
            U[4 * 0 + j, c, k] = t0
            U[4 * 1 + j, c, k] = t1
            U[4 * 2 + j, c, k] = t2
            U[4 * 3 + j, c, k] = t3
        for a in range(4):                                 # (G g) G^T: (4, 4), in place per row a
            r0, r1, r2 = U[4 * a, c, k], U[4 * a + 1, c, k], U[4 * a + 2, c, k]
            U[4 * a + 0, c, k] = r0
            U[4 * a + 1, c, k] = half * (r0 + r1 + r2)
            U[4 * a + 2, c, k] = half * (r0 - r1 + r2)
            U[4 * a + 3, c, k] = r2


@njit(inline="always")
def _at(x, n, y, xx, c):
    """x[n, y, xx, c], or 0 in the padding."""
    if 0 <= y < x.shape[1] and 0 <= xx < x.shape[2]:
        return x[n, y, xx, c]
    return x.dtype.type(0)


@njit(inline="always")
def _store_tile(V, t, c, d00, d01, d02, d03, d10, d11, d12, d13, d20, d21, d22, d23,
                d30, d31, d32, d33):
    """V[:, t, c] = B^T d B for the 4 x 4 patch d."""
    # B^T d (rows of the patch)
    a0, a1, a2, a3 = d00 - d20, d01 - d21, d02 - d22, d03 - d23
    b0, b1, b2, b3 = d10 + d20, d11 + d21, d12 + d22, d13 + d23
    e0, e1, e2, e3 = d20 - d10, d21 - d11, d22 - d12, d23 - d13
    f0, f1, f2, f3 = d10 - d30, d11 - d31, d12 - d32, d13 - d33
    # (B^T d) B (columns)
    V[0, t, c] = a0 - a2
    V[1, t, c] = a1 + a2
    V[2, t, c] = a2 - a1
    V[3, t, c] = a1 - a3
    V[4, t, c] = b0 - b2
    V[5, t, c] = b1 + b2
    V[6, t, c] = b2 - b1
    V[7, t, c] = b1 - b3
    V[8, t, c] = e0 - e2
    V[9, t, c] = e1 + e2
    V[10, t, c] = e2 - e1
    V[11, t, c] = e1 - e3
    V[12, t, c] = f0 - f2
    V[13, t, c] = f1 + f2
    V[14, t, c] = f2 - f1
    V[15, t, c] = f1 - f3


@kernel
def _input_transform(x, r0, r1, th, tw, V):
    """Tile rows r0..r1-1 (row ``n * th + ty``) of x (N, H, W, C) -> V (16, (r1 - r0) tw, C):
    ``V[:, t, c] = B^T d B`` of each tile's 4 x 4 patch (rows 2ty-1..2ty+2, columns 2tx-1..2tx+2,
    zero outside x: the padding of 1), channel by channel."""
    h, w, c_n = x.shape[1], x.shape[2], x.shape[3]
    for t in prange((r1 - r0) * tw):
        r = r0 + t // tw
        n, ty, tx = r // th, r % th, t % tw
        y, z = 2 * ty - 1, 2 * tx - 1                      # the patch's top-left corner
        if y >= 0 and z >= 0 and y + 3 < h and z + 3 < w:  # most tiles: no bounds to check
            for c in range(c_n):
                _store_tile(V, t, c,
                            x[n, y, z, c], x[n, y, z + 1, c], x[n, y, z + 2, c], x[n, y, z + 3, c],
                            x[n, y + 1, z, c], x[n, y + 1, z + 1, c], x[n, y + 1, z + 2, c], x[n, y + 1, z + 3, c],
                            x[n, y + 2, z, c], x[n, y + 2, z + 1, c], x[n, y + 2, z + 2, c], x[n, y + 2, z + 3, c],
                            x[n, y + 3, z, c], x[n, y + 3, z + 1, c], x[n, y + 3, z + 2, c], x[n, y + 3, z + 3, c])
        else:
            for c in range(c_n):
                _store_tile(V, t, c,
                            _at(x, n, y, z, c), _at(x, n, y, z + 1, c), _at(x, n, y, z + 2, c),
                            _at(x, n, y, z + 3, c), _at(x, n, y + 1, z, c), _at(x, n, y + 1, z + 1, c),
                            _at(x, n, y + 1, z + 2, c), _at(x, n, y + 1, z + 3, c), _at(x, n, y + 2, z, c),
                            _at(x, n, y + 2, z + 1, c), _at(x, n, y + 2, z + 2, c), _at(x, n, y + 2, z + 3, c),
                            _at(x, n, y + 3, z, c), _at(x, n, y + 3, z + 1, c), _at(x, n, y + 3, z + 2, c),
                            _at(x, n, y + 3, z + 3, c))


@kernel
def _output_transform(M, r0, r1, th, tw, bias, out):
    """M (16, (r1 - r0) tw, K) -> the 2 x 2 output tiles ``A^T m A + bias`` in out (N, H, W, K)
    (the last row / column of a tile is dropped where H or W is odd)."""
    k_n = M.shape[2]
    out_h, out_w = out.shape[1], out.shape[2]
    for t in prange((r1 - r0) * tw):
        r = r0 + t // tw
        n, ty, tx = r // th, r % th, t % tw
        y, x = 2 * ty, 2 * tx
        for k in range(k_n):
            # m A (per row a of the 4 x 4): s_a0 = m_a0 + m_a1 + m_a2, s_a1 = m_a1 - m_a2 - m_a3
            s00 = M[0, t, k] + M[1, t, k] + M[2, t, k]
            s01 = M[1, t, k] - M[2, t, k] - M[3, t, k]
            s10 = M[4, t, k] + M[5, t, k] + M[6, t, k]
            s11 = M[5, t, k] - M[6, t, k] - M[7, t, k]
            s20 = M[8, t, k] + M[9, t, k] + M[10, t, k]
            s21 = M[9, t, k] - M[10, t, k] - M[11, t, k]
            s30 = M[12, t, k] + M[13, t, k] + M[14, t, k]
            s31 = M[13, t, k] - M[14, t, k] - M[15, t, k]
            bk = bias[k]
            out[n, y, x, k] = s00 + s10 + s20 + bk               # A^T (m A)
            if x + 1 < out_w:
                out[n, y, x + 1, k] = s01 + s11 + s21 + bk
            if y + 1 < out_h:
                out[n, y + 1, x, k] = s10 - s20 - s30 + bk
                if x + 1 < out_w:
                    out[n, y + 1, x + 1, k] = s11 - s21 - s31 + bk


def conv3x3(x_nhwc, w, b):
    """3x3 conv, stride 1, padding 1: x (N, H, W, C) NHWC contiguous, w (K, C, 3, 3), b (K,) or None
    -> (N, H, W, K) NHWC, the bias added."""
    n, h, wd, c = x_nhwc.shape
    k = w.shape[0]
    dt = x_nhwc.dtype
    th, tw = (h + 1) // 2, (wd + 1) // 2                  # tiles per image; odd sizes get a spare row
    U = np.empty((16, c, k), dt)
    _filter_transform(np.ascontiguousarray(w, dtype=dt), U)
    out = np.empty((n, h, wd, k), dt)
    bias = np.zeros(k, dt) if b is None else np.ascontiguousarray(b, dtype=dt)
    rows = n * th                                         # tile rows over the batch
    step = max(1, _CHUNK_ELEMENTS // (16 * tw * max(c, k)))
    V = np.empty((16, min(step, rows) * tw, c), dt)
    M = np.empty((16, min(step, rows) * tw, k), dt)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        m = (r1 - r0) * tw
        _input_transform(x_nhwc, r0, r1, th, tw, V)
        for xi in range(16):                               # the 16 GEMMs, one per transform position
            np.matmul(V[xi, :m], U[xi], out=M[xi, :m])
        _output_transform(M, r0, r1, th, tw, bias, out)
    return out
