"""Pictures of every stage: anchors, proposals before/after NMS, instances, GT vs prediction, losses.

Seeing the intermediate results is how one learns what each stage does: the anchors tile the image
at one scale per FPN level; the RPN's proposals crowd around objects and NMS thins them out; the heads
turn the survivors into labelled boxes and masks (the ``{(c_i, b_i, M_i)}`` of the notes, section 1).

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no display, no global
state; rendering uses the Agg canvas) and, given ``save_path``, also writes it as PNG atomically
(temporary file, then ``os.replace``).

Sizes. Image views are pixel-exact: one panel is ``(H * zoom) x (W * zoom)`` PNG pixels with the
image filling it, so image pixel ``(px, py)`` is the block ``[px*zoom, (px+1)*zoom) x [py*zoom,
(py+1)*zoom)``; ``zoom`` defaults to ``max(1, 512 // max(H, W))`` (4 for 128x128 images). A figure of
``n`` side-by-side panels is ``n`` times as wide. Loss curves are ``figsize * dpi`` pixels.

Images may be ``uint8`` or float (``[0, 1]`` if its maximum is at most 1, else ``[0, 255]``), laid out
``(H, W, 3)``, ``(H, W, 4)`` (alpha ignored), ``(3, H, W)`` (the model's layout) or ``(H, W)`` gray.
Boxes are ``(D, 4)`` ``x1, y1, x2, y2`` in pixels; masks ``(D, H, W)`` binary. Arrays may come from any
backend: a CuPy (device) array is copied to the host first (:func:`mrcnn_np.backend.to_numpy`).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .atomic import atomic_write_bytes
from .backend import to_numpy

__all__ = ["PALETTE", "to_rgb_uint8", "overlay_masks", "save_figure", "draw_instances",
           "draw_anchors", "draw_proposals", "draw_gt_vs_pred", "draw_prediction_grid", "plot_losses",
           "read_jsonl", "ema", "default_span"]

# Distinct, saturated colours (RGB 0..255), cycled by instance index.
PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
    [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0], [0, 0, 128],
], np.uint8)
_DPI = 100
LOSS_KEYS = ("loss", "loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask")


# ----------------------------------------------------------------------------------------------------
# Plumbing: images, figures, saving.
# ----------------------------------------------------------------------------------------------------

def _host(a):
    """``a`` as a host (NumPy) array, if it is a device array; ``None`` and lists stay as they are."""
    return a if a is None or isinstance(a, (list, tuple)) else to_numpy(a)


def to_rgb_uint8(image) -> np.ndarray:
    """Any supported image layout (see the module docstring) -> ``uint8 (H, W, 3)``."""
    a = to_numpy(image)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[:, :, :3]
    elif a.ndim == 3 and a.shape[0] in (1, 3):
        a = np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a
        a = a.transpose(1, 2, 0)                                     # (3, H, W) -> (H, W, 3)
    else:
        raise ValueError(f"image: expected (H, W), (H, W, 3|4) or (3, H, W), got shape {a.shape}")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    a = a.astype(np.float64)
    if a.size and np.nanmax(a) <= 1.0:
        a = a * 255.0
    return np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)


def _colour(k: int) -> np.ndarray:
    return PALETTE[k % len(PALETTE)]


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` ``(H, W)`` with a 4-neighbour outside it (the outline)."""
    m = np.pad(mask.astype(bool), 1)
    interior = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask.astype(bool) & ~interior


def overlay_masks(image, masks, colors=None, alpha: float = 0.45, outline: bool = True) -> np.ndarray:
    """Blend masks ``(D, H, W)`` into ``image`` -> ``uint8 (H, W, 3)``.

    Inside mask ``d``: ``(1 - alpha) * pixel + alpha * colour_d`` (later masks on top); with
    ``outline`` the mask's boundary pixels take the full colour so touching instances stay apart.
    ``colors`` ``(D, 3)`` uint8 defaults to :data:`PALETTE` in order.
    """
    out = to_rgb_uint8(image).astype(np.float64)
    masks = to_numpy(masks).astype(bool).reshape((-1,) + out.shape[:2])
    for d, m in enumerate(masks):
        c = (_colour(d) if colors is None else np.asarray(colors[d])).astype(np.float64)
        out[m] = (1.0 - alpha) * out[m] + alpha * c
        if outline:
            out[_boundary(m)] = c
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def _zoom(h: int, w: int, zoom) -> int:
    return max(1, 512 // max(h, w)) if zoom is None else int(zoom)


def _image_panels(images, zoom=None):
    """A figure with one pixel-exact axes per image (side by side). Returns ``(fig, axes)``."""
    h, w = images[0].shape[:2]
    z = _zoom(h, w, zoom)
    n = len(images)
    fig = Figure(figsize=(n * w * z / _DPI, h * z / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    axes = []
    for k, im in enumerate(images):
        ax = fig.add_axes((k / n, 0.0, 1.0 / n, 1.0))
        # extent puts pixel (px, py) at [px, px+1) x [py, py+1): box coordinates land where they belong
        ax.imshow(im, interpolation="nearest", extent=(0, w, h, 0))
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_axis_off()
        axes.append(ax)
    return fig, axes


def _title(ax, text) -> None:
    if text:
        ax.text(0.01, 0.99, text, transform=ax.transAxes, va="top", ha="left", fontsize=9,
                color="white", bbox=dict(facecolor="black", alpha=0.6, pad=2, edgecolor="none"))


def save_figure(fig: Figure, path) -> Path:
    """Render ``fig`` to PNG at its own size and DPI and write it to ``path`` atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _finish(fig: Figure, save_path) -> Figure:
    if save_path is not None:
        save_figure(fig, save_path)
    return fig


def _as_boxes(boxes) -> np.ndarray:
    b = np.asarray([] if boxes is None else _host(boxes), np.float64)
    if b.size and (b.ndim != 2 or b.shape[1] != 4):
        raise ValueError(f"boxes: expected shape (D, 4), got {b.shape}")
    return b.reshape(-1, 4)


def _draw_boxes(ax, boxes, colors, linewidth=1.5, alpha=1.0) -> None:
    for b, c in zip(boxes, colors):
        ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False,
                               edgecolor=np.asarray(c) / 255.0, linewidth=linewidth, alpha=alpha))


# ----------------------------------------------------------------------------------------------------
# Instances.
# ----------------------------------------------------------------------------------------------------

def _instances_panel(image, boxes, labels, scores, masks, class_names, score_thresh, alpha):
    """Select, colour and blend; returns ``(rgb (H, W, 3), draw)`` where ``draw(ax)`` adds the boxes
    and their captions."""
    img = to_rgb_uint8(image)
    b = _as_boxes(boxes)
    labels, scores, masks = _host(labels), _host(scores), _host(masks)
    n = len(b) if boxes is not None else (0 if masks is None else len(masks))
    keep = np.ones(n, bool)
    if scores is not None:
        keep &= np.asarray(scores, np.float64).reshape(-1) >= score_thresh
    idx = np.flatnonzero(keep)
    colors = [_colour(k) for k in range(len(idx))]
    rgb = img if masks is None or len(idx) == 0 else overlay_masks(
        img, np.asarray(masks)[idx], colors, alpha=alpha)

    def caption(k):
        parts = []
        if labels is not None:
            lab = int(np.asarray(labels)[k])
            parts.append(class_names[lab] if class_names is not None and 0 <= lab < len(class_names)
                         else str(lab))
        if scores is not None:
            parts.append(f"{float(np.asarray(scores)[k]):.2f}")
        return " ".join(parts)

    def draw(ax):
        if boxes is None:
            return
        _draw_boxes(ax, b[idx], colors)
        for j, k in enumerate(idx):
            text = caption(k)
            if text:
                # Above the box, or just inside it when the box touches the top edge.
                inside = b[k, 1] < 0.06 * img.shape[0]
                ax.text(b[k, 0], b[k, 1], text, va="top" if inside else "bottom", ha="left",
                        fontsize=8, color="black",
                        bbox=dict(facecolor=colors[j] / 255.0, alpha=0.8, pad=1, edgecolor="none"),
                        clip_on=True)
    return rgb, draw


def draw_instances(image, boxes=None, labels=None, scores=None, masks=None, class_names=None, *,
                   score_thresh: float = 0.0, alpha: float = 0.45, title: str | None = None,
                   zoom: int | None = None, save_path=None) -> Figure:
    """Instances on an image: translucent masks ``(D, H, W)`` with outlines, boxes ``(D, 4)``, and
    captions "class score" (``labels (D,)`` index ``class_names``; ``scores (D,)``). Instances with
    ``score < score_thresh`` are left out. Any of boxes/labels/scores/masks may be ``None``.
    One panel, ``(H*zoom, W*zoom)`` pixels."""
    rgb, draw = _instances_panel(image, boxes, labels, scores, masks, class_names, score_thresh, alpha)
    fig, (ax,) = _image_panels([rgb], zoom)
    draw(ax)
    _title(ax, title)
    return _finish(fig, save_path)


def draw_prediction_grid(images, predictions, class_names=None, *, cols: int = 4,
                         score_thresh: float = 0.5, alpha: float = 0.45, zoom: int = 2,
                         save_path=None) -> Figure:
    """A grid of images ``[(H, W, 3), ...]`` with their predicted instances (``predictions``: dicts as
    for :func:`draw_instances`), ``cols`` per row, each panel ``(H*zoom, W*zoom)`` pixels."""
    if not images or len(images) != len(predictions):
        raise ValueError(f"images, predictions: expected the same non-zero number, got "
                         f"{len(images)} and {len(predictions)}")
    h, w = to_rgb_uint8(images[0]).shape[:2]
    cols = min(cols, len(images))
    rows = -(-len(images) // cols)
    fig = Figure(figsize=(cols * w * zoom / _DPI, rows * h * zoom / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    for k, (image, p) in enumerate(zip(images, predictions)):
        rgb, draw = _instances_panel(image, p.get("boxes"), p.get("labels"), p.get("scores"),
                                     p.get("masks"), class_names, score_thresh, alpha)
        r, c = divmod(k, cols)
        ax = fig.add_axes((c / cols, 1 - (r + 1) / rows, 1 / cols, 1 / rows))
        ax.imshow(rgb, interpolation="nearest", extent=(0, w, h, 0))
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_axis_off()
        draw(ax)
    return _finish(fig, save_path)


def draw_gt_vs_pred(image, gt: dict, pred: dict, class_names=None, *, score_thresh: float = 0.5,
                    alpha: float = 0.45, zoom: int | None = None, save_path=None) -> Figure:
    """Ground truth (left) and prediction (right) on the same image, two panels.

    ``gt``: ``boxes (M, 4)``, ``labels (M,)``, optional ``masks (M, H, W)``. ``pred``: ``boxes (D, 4)``,
    ``labels (D,)``, ``scores (D,)``, optional ``masks (D, H, W)``; detections below ``score_thresh``
    are not drawn. Size ``(H*zoom, 2*W*zoom)``."""
    left, draw_l = _instances_panel(image, gt.get("boxes"), gt.get("labels"), None, gt.get("masks"),
                                    class_names, 0.0, alpha)
    right, draw_r = _instances_panel(image, pred.get("boxes"), pred.get("labels"), pred.get("scores"),
                                     pred.get("masks"), class_names, score_thresh, alpha)
    fig, (ax_l, ax_r) = _image_panels([left, right], zoom)
    draw_l(ax_l)
    draw_r(ax_r)
    n_pred = (np.asarray(_host(pred.get("scores", []))) >= score_thresh).sum()
    _title(ax_l, f"ground truth ({len(_as_boxes(gt.get('boxes')))})")
    _title(ax_r, f"prediction ({n_pred} with score >= {score_thresh:g})")
    return _finish(fig, save_path)


# ----------------------------------------------------------------------------------------------------
# Anchors and proposals.
# ----------------------------------------------------------------------------------------------------

def draw_anchors(image, anchors, *, max_boxes: int = 40, seed: int = 0, title: str | None = None,
                 zoom: int | None = None, save_path=None) -> Figure:
    """The anchors ``(A, 4)`` of one FPN level on ``image``.

    Every anchor centre is a dot (the grid shows the level's stride); all anchors at the location
    nearest the image centre are drawn in colour (one per size x aspect ratio); ``max_boxes`` others,
    drawn at random (``seed``), in thin white. Parts outside the image are cut off. One panel.
    """
    img = to_rgb_uint8(image)
    h, w = img.shape[:2]
    a = _as_boxes(anchors)
    fig, (ax,) = _image_panels([img], zoom)
    if len(a):
        cx, cy = (a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2
        centres = np.unique(np.stack([cx, cy], 1).round(3), axis=0)
        ax.plot(centres[:, 0], centres[:, 1], ".", color="yellow", markersize=2, alpha=0.8)
        k = np.argmin((cx - w / 2) ** 2 + (cy - h / 2) ** 2)      # the location nearest the centre
        at_centre = np.flatnonzero(np.isclose(cx, cx[k]) & np.isclose(cy, cy[k]))
        others = np.setdiff1d(np.arange(len(a)), at_centre)
        rng = np.random.default_rng(seed)
        sample = rng.choice(others, size=min(max_boxes, len(others)), replace=False)
        _draw_boxes(ax, a[sample], [np.array([255, 255, 255])] * len(sample), linewidth=0.6,
                    alpha=0.6)
        _draw_boxes(ax, a[at_centre], [_colour(k) for k in range(len(at_centre))], linewidth=2.0)
    _title(ax, title if title is not None else f"{len(a)} anchors")
    return _finish(fig, save_path)


def draw_proposals(image, before_nms, after_nms, *, max_before: int = 300, max_after: int = 100,
                   zoom: int | None = None, save_path=None) -> Figure:
    """Proposals before (left) and after (right) NMS: two ``(P, 4)`` box arrays, best first.

    Draws at most the first ``max_before`` / ``max_after`` of each; before NMS in thin translucent
    lines (the crowds around each object are the point), after NMS in distinct colours. Size
    ``(H*zoom, 2*W*zoom)``."""
    img = to_rgb_uint8(image)
    before, after = _as_boxes(before_nms), _as_boxes(after_nms)
    fig, (ax_b, ax_a) = _image_panels([img, img], zoom)
    nb, na = min(len(before), max_before), min(len(after), max_after)
    _draw_boxes(ax_b, before[:nb], [np.array([0, 255, 255])] * nb, linewidth=0.6, alpha=0.4)
    _draw_boxes(ax_a, after[:na], [_colour(k) for k in range(na)], linewidth=1.2)
    _title(ax_b, f"before NMS: {len(before)} (top {nb} drawn)")
    _title(ax_a, f"after NMS: {len(after)} (top {na} drawn)")
    return _finish(fig, save_path)


# ----------------------------------------------------------------------------------------------------
# Training curves.
# ----------------------------------------------------------------------------------------------------

def read_jsonl(path) -> list[dict]:
    """Records of a JSON-lines file (one JSON object per line; blank lines skipped)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: line {n} is not valid JSON ({exc})") from exc
    return records


def ema(y, span: float) -> np.ndarray:
    """Exponential moving average of ``y`` with ``alpha = 2 / (span + 1)`` (``span`` records):
    ``s_0 = y_0``, ``s_t = alpha y_t + (1 - alpha) s_{t-1}``. Non-finite values (a record lacking the
    key) are skipped: they stay NaN in the result and leave ``s`` as it was. ``span <= 1``: ``y`` itself."""
    y = np.asarray(y, dtype=float)
    out = np.full(y.shape, np.nan)
    alpha = 2.0 / (span + 1.0) if span > 1 else 1.0
    s = None
    for t, v in enumerate(y):
        if np.isfinite(v):
            s = v if s is None else alpha * v + (1.0 - alpha) * s
            out[t] = s
    return out


def default_span(n_records: int) -> int:
    """The EMA span :func:`plot_losses` uses by default: a twentieth of the run's records (at least 1,
    i.e. no smoothing, at most 50)."""
    return int(min(50, max(1, n_records // 20)))


def _wants_log_scale(curves, ratio: float = 10.0) -> bool:
    """True when the terms' typical sizes (the median of each curve's positive values) span at least
    ``ratio`` (an order of magnitude): on a linear axis the small ones would be flat lines at 0."""
    medians = [np.median(y[np.isfinite(y) & (y > 0)]) for y in curves if (np.isfinite(y) & (y > 0)).any()]
    return len(medians) > 1 and max(medians) / min(medians) >= ratio


def plot_losses(records, keys=None, *, x_key: str | None = None, smooth: int | None = None,
                log_scale: bool | None = None, title: str = "training losses", figsize=(8, 5),
                dpi: int = _DPI, save_path=None, lr_key: str | None = "lr") -> Figure:
    """Loss curves from training records: a list of dicts or a JSONL path (one dict per step), the
    ``log.jsonl`` that ``mrcnn-np train`` writes (and draws into ``loss_curve.png`` with the defaults).

    ``keys``: the terms to plot (default: those of ``loss, loss_rpn_cls, loss_rpn_box, loss_cls,
    loss_box, loss_mask`` present, then any other key starting with ``loss``); the total ``loss`` is
    drawn black and thicker. ``x_key``: the x axis (default the first of ``iter``, ``iteration``,
    ``step`` present, else the record index).

    ``smooth``: each term is drawn as its exponential moving average (:func:`ema`, span ``smooth``
    records) over its raw values, drawn faint; ``None`` (default) picks the span
    :func:`default_span`, ``0`` or ``1`` draws the raw values alone. Only the smoothed lines are in
    the legend. ``log_scale``: a logarithmic loss axis; ``None`` (default) uses one when the terms'
    medians differ by an order of magnitude or more. ``lr_key``: if the records have it (``lr``,
    the learning rate of each step), it is drawn in a panel of its own below the losses, sharing
    the x axis; ``None`` leaves it out. A record lacking a key leaves a gap. The losses' axes are
    ``fig.axes[0]``. Size ``figsize * dpi`` pixels.
    """
    if isinstance(records, (str, Path)):
        records = read_jsonl(records)
    records = list(records)
    present = {k for r in records for k in r}
    if keys is None:
        keys = [k for k in LOSS_KEYS if k in present]
        keys += sorted(k for k in present if k.startswith("loss") and k not in keys)
    if x_key is None:
        x_key = next((k for k in ("iter", "iteration", "step") if k in present), None)
    x = (np.array([float(r.get(x_key, np.nan)) for r in records]) if x_key
         else np.arange(len(records), dtype=float))
    span = default_span(len(records)) if smooth is None else smooth
    curves = [np.array([float(r[k]) if r.get(k) is not None else np.nan for r in records]) for k in keys]
    if log_scale is None:
        log_scale = _wants_log_scale(curves)
    show_lr = lr_key is not None and lr_key in present

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    if show_lr:
        ax, ax_lr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    else:
        ax = fig.add_subplot(1, 1, 1)
    j = 0
    for k, y in zip(keys, curves):
        if k == "loss":
            c, lw = "black", 2.0
        else:
            c, lw = f"C{j % 10}", 1.3          # matplotlib's default line colours
            j += 1
        if span and span > 1:
            ax.plot(x, y, color=c, alpha=0.2, linewidth=0.8)                 # raw, faint (no legend entry)
            ax.plot(x, ema(y, span), color=c, linewidth=lw, label=k)
        else:
            ax.plot(x, y, color=c, linewidth=lw, label=k)
    if log_scale:
        ax.set_yscale("log")
    ax.set_ylabel("loss (log scale)" if log_scale else "loss")
    ax.set_title(title)
    ax.grid(True, alpha=0.3, which="both" if log_scale else "major")
    if keys:
        ax.legend(loc="best", fontsize=8, ncol=2 if len(keys) > 3 else 1,
                  title=f"EMA over {span} records, raw faint" if span and span > 1 else None,
                  title_fontsize=7)
    bottom = ax
    if show_lr:
        lr = np.array([float(r[lr_key]) if r.get(lr_key) is not None else np.nan for r in records])
        ax_lr.plot(x, lr, color="tab:gray", linewidth=1.2)
        ax_lr.set_ylabel("learning rate", fontsize=8)
        ax_lr.ticklabel_format(axis="y", style="plain", useOffset=False)
        ax_lr.grid(True, alpha=0.3)
        ax.tick_params(labelbottom=False)
        bottom = ax_lr
    bottom.set_xlabel(x_key or "record")
    fig.tight_layout()
    return _finish(fig, save_path)
