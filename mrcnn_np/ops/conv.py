"""2-D convolution and transposed convolution, forward and backward, as GEMMs on NHWC data.

Notation (per image, per output pixel ``(i, j)`` and output channel ``k``)::

    conv2d:            y[k, i, j] = b[k] + sum_{c, u, v} w[k, c, u, v] * x_pad[c, s*i + u, s*j + v]
    conv_transpose2d:  y = the adjoint of conv2d applied to x (each input pixel scatters w * x)

Two ways to turn the sum into matrix products, both with channels last so every row a GEMM reads
is a whole, contiguous channel vector:

* **stride 1: shifted GEMMs.** Flatten the padded input to rows ``X[(n*Hp + r)*Wp + q] = x_pad[n, :, r, q]``.
  Kernel offset ``(u, v)`` then just shifts that row index by ``u*Wp + v``, so
  ``Y = sum_{u, v} X[shift(u, v):][:M] @ W_uv`` (``W_uv = w[:, :, u, v]^T``, C_in x C_out), computed on
  the padded grid; the rows of ``Y`` that are real output pixels are kept, the rest (the last
  ``kh - 1`` rows and ``kw - 1`` columns of each image) are dropped. No im2col copy at all, and the
  backward has the same shape: ``dW_uv = X_shift^T @ dY``, ``dX_shift += dY @ W_uv^T``.
* **stride > 1: im2col.** Gather every receptive field into ``cols (N*Ho*Wo, kh*kw*C)`` (one strided
  slice copy per kernel offset) and do one GEMM; ``col2im``, its adjoint, adds the slices back, one
  kernel offset at a time: within one offset no two rows hit the same pixel, so plain ``+=`` is
  exact and no ``np.add.at`` is needed.

Outputs are returned as NCHW *views* of NHWC buffers (``transpose``), which costs nothing; the next
conv's own NHWC transpose of that view is then free as well.
"""
from __future__ import annotations

from ..backend import get_array_module
from ._check import check_dim, check_float, check_ndim, check_nonneg_int, check_positive_int

__all__ = ["conv2d_forward", "conv2d_backward", "conv_transpose2d_forward",
           "conv_transpose2d_backward", "im2col_nhwc", "col2im_nhwc", "check_conv2d_args",
           "check_conv_transpose2d_args"]


def im2col_nhwc(x_pad, kh, kw, stride, out_h, out_w):
    """Gather every receptive field of ``x_pad`` into one GEMM operand.

    x_pad: (N, Hp, Wp, C), already padded.  Returns cols: (N, out_h, out_w, kh, kw, C) where
    ``cols[n, i, j, u, v, c] = x_pad[n, s*i + u, s*j + v, c]``.
    """
    xp = get_array_module(x_pad)
    n, _, _, c = x_pad.shape
    if kh == 1 and kw == 1:  # a 1x1 conv needs no copy beyond the stride
        return x_pad[:, : stride * out_h : stride, : stride * out_w : stride, :][:, :, :, None, None, :]
    cols = xp.empty((n, out_h, out_w, kh, kw, c), dtype=x_pad.dtype)
    for u in range(kh):
        for v in range(kw):
            cols[:, :, :, u, v, :] = x_pad[:, u : u + stride * out_h : stride,
                                              v : v + stride * out_w : stride, :]
    return cols


def col2im_nhwc(cols, padded_h, padded_w, stride):
    """The adjoint of :func:`im2col_nhwc`: add every column entry back to the pixel it came from.

    cols: (N, out_h, out_w, kh, kw, C) -> (N, padded_h, padded_w, C).
    """
    xp = get_array_module(cols)
    n, out_h, out_w, kh, kw, c = cols.shape
    out = xp.zeros((n, padded_h, padded_w, c), dtype=cols.dtype)
    for u in range(kh):
        for v in range(kw):
            # NOTE: within one offset (u, v) the strided slice visits distinct pixels, so `+=` is exact.
            out[:, u : u + stride * out_h : stride, v : v + stride * out_w : stride, :] += cols[:, :, :, u, v, :]
    return out


def _pad_nhwc(x_nhwc, padding):
    """Copy (N, H, W, C) into a zero-bordered (N, H + 2p, W + 2p, C) buffer (only the border is
    zero-filled: the interior is overwritten anyway)."""
    xp = get_array_module(x_nhwc)
    n, h, w, c = x_nhwc.shape
    if padding == 0:
        return xp.ascontiguousarray(x_nhwc)
    p = padding
    out = xp.empty((n, h + 2 * p, w + 2 * p, c), dtype=x_nhwc.dtype)
    out[:, :p], out[:, h + p:], out[:, p : h + p, :p], out[:, p : h + p, w + p:] = 0, 0, 0, 0
    out[:, p : h + p, p : w + p] = x_nhwc
    return out


def _check_conv_args(x, w, b, stride, padding, w_layout, cin_axis):
    check_ndim("x", x, 4, "(N, C, H, W)")
    check_float("x", x)
    check_ndim("w", w, 4, w_layout)
    check_dim("w", w, cin_axis, x.shape[1], "the channels C of x")
    cout = w.shape[1 - cin_axis]
    if b is not None:
        check_ndim("b", b, 1, f"({cout},)")
        check_dim("b", b, 0, cout, "the output channels of w")
    return check_positive_int("stride", stride), check_nonneg_int("padding", padding)


def check_conv2d_args(x, w, b, stride=1, padding=0):
    """The argument check of :func:`conv2d_forward` (kernels get it too); returns ``(stride, padding)``."""
    stride, padding = _check_conv_args(x, w, b, stride, padding, "(C_out, C_in, kh, kw)", 1)
    hp, wp = x.shape[2] + 2 * padding, x.shape[3] + 2 * padding
    if hp < w.shape[2] or wp < w.shape[3]:
        raise ValueError(f"x: padded input {hp}x{wp} is smaller than the kernel {w.shape[2]}x{w.shape[3]}")
    return stride, padding


def check_conv_transpose2d_args(x, w, b, stride=1, padding=0):
    """The argument check of :func:`conv_transpose2d_forward` (kernels get it too)."""
    stride, padding = _check_conv_args(x, w, b, stride, padding, "(C_in, C_out, kh, kw)", 0)
    full_h, full_w = (x.shape[2] - 1) * stride + w.shape[2], (x.shape[3] - 1) * stride + w.shape[3]
    if full_h - 2 * padding < 1 or full_w - 2 * padding < 1:
        raise ValueError(f"padding: {padding} crops the {full_h}x{full_w} output to nothing")
    return stride, padding


def conv2d_forward(x, w, b, stride=1, padding=0):
    """Convolution (cross-correlation, as in every deep-learning library).

    x: (N, C_in, H, W); w: (C_out, C_in, kh, kw); b: (C_out,) or None.
    Returns ``out`` (N, C_out, H_out, W_out) with ``H_out = (H + 2p - kh) // s + 1``, and the cache.
    """
    stride, padding = check_conv2d_args(x, w, b, stride, padding)
    n, c, h, wd = x.shape
    cout, _, kh, kw = w.shape
    hp, wp = h + 2 * padding, wd + 2 * padding
    out_h, out_w = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    x_pad = _pad_nhwc(x.transpose(0, 2, 3, 1), padding)                # (N, Hp, Wp, C)
    if stride == 1:
        out, saved = _shifted_forward(x_pad, w)
    else:
        out, saved = _im2col_forward(x_pad, w, stride, out_h, out_w)
    if b is not None:
        out += b
    out = out.transpose(0, 3, 1, 2)                                     # NHWC buffer -> NCHW view
    return out, (saved, w.shape, x.shape, stride, padding, b is not None)


def _shifted_forward(x_pad, w):
    """Stride 1: ``Y = sum_{u,v} X[u*Wp + v :][:M] @ W_uv`` on the flattened padded input."""
    xp = get_array_module(x_pad)
    n, hp, wp, c = x_pad.shape
    cout, _, kh, kw = w.shape
    rows = x_pad.reshape(n * hp * wp, c)                                # (N*Hp*Wp, C) flat rows
    w_uv = w.transpose(2, 3, 1, 0).reshape(kh * kw, c, cout)            # (kh*kw, C, C_out)
    # Output row r reads input rows r + u*Wp + v. Rows past the last real output pixel are not
    # needed, which keeps every shifted window inside the buffer.
    m = rows.shape[0] - (kh - 1) * wp - (kw - 1)
    out = xp.zeros((n * hp * wp, cout), dtype=x_pad.dtype)
    for k in range(kh * kw):
        shift = (k // kw) * wp + k % kw
        out[:m] += rows[shift : shift + m] @ w_uv[k]
    out_h, out_w = hp - kh + 1, wp - kw + 1
    return out.reshape(n, hp, wp, cout)[:, :out_h, :out_w], (rows, w_uv, m)


def _im2col_forward(x_pad, w, stride, out_h, out_w):
    """Stride > 1: one GEMM over the gathered receptive fields ``cols``."""
    n, _, _, c = x_pad.shape
    cout, _, kh, kw = w.shape
    cols = im2col_nhwc(x_pad, kh, kw, stride, out_h, out_w)            # (N, Ho, Wo, kh, kw, C)
    cols2d = cols.reshape(n * out_h * out_w, kh * kw * c)               # one row per output pixel
    w2d = w.transpose(0, 2, 3, 1).reshape(cout, kh * kw * c)            # rows ordered (u, v, c) too
    out = cols2d @ w2d.T                                                # (N*Ho*Wo, C_out)
    return out.reshape(n, out_h, out_w, cout), (cols2d, w2d)


def conv2d_backward(dout, cache):
    """Gradients of :func:`conv2d_forward`.

    dout: (N, C_out, H_out, W_out).  Returns ``(dx, dw, db)`` with the shapes of ``x``, ``w``, ``b``
    (``db`` is None when ``b`` was None)::

        dw = X^T dY (per kernel offset)      db = sum_{n, i, j} dout      dx = the adjoint of the gather
    """
    saved, w_shape, x_shape, stride, padding, has_bias = cache
    n, c, h, wd = x_shape
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    dout_nhwc = dout.transpose(0, 2, 3, 1)                              # (N, Ho, Wo, C_out)
    if stride == 1:
        dx_pad, dw = _shifted_backward(dout_nhwc, saved, w_shape, h + 2 * padding, wd + 2 * padding)
    else:
        dx_pad, dw = _im2col_backward(dout_nhwc, saved, w_shape, h + 2 * padding, wd + 2 * padding,
                                      stride)
    dx = dx_pad[:, padding : padding + h, padding : padding + wd, :].transpose(0, 3, 1, 2)
    return dx, dw, db


def _shifted_backward(dout_nhwc, saved, w_shape, hp, wp):
    xp = get_array_module(dout_nhwc)
    rows, w_uv, m = saved
    n, out_h, out_w, cout = dout_nhwc.shape
    _, c, kh, kw = w_shape
    # dY on the padded grid, zero at the positions that are not output pixels
    dy = xp.zeros((n, hp, wp, cout), dtype=dout_nhwc.dtype)
    dy[:, :out_h, :out_w] = dout_nhwc
    dy = dy.reshape(n * hp * wp, cout)[:m]
    drows = xp.zeros_like(rows)
    dw_uv = xp.empty((kh * kw, c, cout), dtype=rows.dtype)
    for k in range(kh * kw):
        shift = (k // kw) * wp + k % kw
        dw_uv[k] = rows[shift : shift + m].T @ dy                      # dW_uv = X_shift^T dY
        drows[shift : shift + m] += dy @ w_uv[k].T                      # dX_shift += dY W_uv^T
    dw = dw_uv.reshape(kh, kw, c, cout).transpose(3, 2, 0, 1)           # -> (C_out, C_in, kh, kw)
    return drows.reshape(n, hp, wp, c), dw


def _im2col_backward(dout_nhwc, saved, w_shape, hp, wp, stride):
    cols2d, w2d = saved
    n, out_h, out_w, cout = dout_nhwc.shape
    _, c, kh, kw = w_shape
    dout2d = dout_nhwc.reshape(n * out_h * out_w, cout)                 # (N*Ho*Wo, C_out)
    dw = (dout2d.T @ cols2d).reshape(cout, kh, kw, c).transpose(0, 3, 1, 2)
    dcols = (dout2d @ w2d).reshape(n, out_h, out_w, kh, kw, c)
    return col2im_nhwc(dcols, hp, wp, stride), dw


def conv_transpose2d_forward(x, w, b, stride=1, padding=0):
    """Transposed convolution ("deconvolution"): the adjoint of :func:`conv2d_forward` in ``x``.

    Every input pixel scatters ``x[n, c, i, j] * w[c, :, :, :]`` into the output at ``(s*i, s*j)``;
    overlapping contributions add, and ``padding`` crops that many pixels from each border.
    x: (N, C_in, H, W); w: (C_in, C_out, kh, kw); b: (C_out,) or None.
    Returns ``out`` (N, C_out, H_out, W_out) with ``H_out = (H - 1)*s - 2p + kh``, and the cache.
    """
    stride, padding = check_conv_transpose2d_args(x, w, b, stride, padding)
    n, cin, h, wd = x.shape
    _, cout, kh, kw = w.shape
    full_h, full_w = (h - 1) * stride + kh, (wd - 1) * stride + kw
    out_h, out_w = full_h - 2 * padding, full_w - 2 * padding

    x2d = x.transpose(0, 2, 3, 1).reshape(n * h * wd, cin)             # (N*H*W, C_in)
    w2d = w.transpose(0, 2, 3, 1).reshape(cin, kh * kw * cout)          # columns ordered (u, v, c_out)
    cols = (x2d @ w2d).reshape(n, h, wd, kh, kw, cout)                  # what each pixel scatters
    full = col2im_nhwc(cols, full_h, full_w, stride)                    # (N, full_h, full_w, C_out)
    out = full[:, padding : padding + out_h, padding : padding + out_w, :]
    if b is not None:
        out = out + b
    cache = (x2d, w2d, w.shape, x.shape, stride, padding, b is not None)
    return out.transpose(0, 3, 1, 2), cache


def conv_transpose2d_backward(dout, cache):
    """Gradients of :func:`conv_transpose2d_forward`: the backward of a transposed conv is a conv.

    dout: (N, C_out, H_out, W_out).  Returns ``(dx, dw, db)`` with the shapes of ``x``, ``w``, ``b``.
    """
    x2d, w2d, w_shape, x_shape, stride, padding, has_bias = cache
    n, cin, h, wd = x_shape
    _, cout, kh, kw = w_shape
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    dfull = _pad_nhwc(dout.transpose(0, 2, 3, 1), padding)              # undo the crop
    dcols = im2col_nhwc(dfull, kh, kw, stride, h, wd).reshape(n * h * wd, kh * kw * cout)
    dx = (dcols @ w2d.T).reshape(n, h, wd, cin).transpose(0, 3, 1, 2)
    dw = (x2d.T @ dcols).reshape(cin, kh, kw, cout).transpose(0, 3, 1, 2)
    return dx, dw, db
