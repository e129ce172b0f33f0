"""Stand-in weights for ``r50_fpn`` that behave like a trained network, regenerated from a seed.

torchvision's COCO file cannot be downloaded here (and is 170 MB), yet the equivalence with
torchvision has to be tested at full scale, on real photos. Random weights do not do: activations
drift through 53 layers, and a random 91-way classifier never gives a class the 0.05 the
postprocessing asks for, so there would be no detections to compare. The fixture is::

    every weight      drawn from N(0, 1) or U(-1, 1) by its own generator, seeded by (seed, crc32(key)),
                      then scaled as listed in :func:`fixture_state_dict` (He / PyTorch's defaults,
                      with a few heads scaled so that they make decisions: RPN objectness spread,
                      a confident classifier, saturated mask logits)
    FrozenBN stats    calibrated on real photos (benchmarks/torchvision_golden.py): each BN's running
                      mean and variance are set, layer by layer in one forward pass of torchvision's
                      model, to the statistics of the input that layer sees, so every layer's output
                      is normalised as in a trained network. These 53,120 numbers are the only
                      committed part (``tests/golden/r50/calibration.npz``, float32).

The same function runs beside torch (in the golden script, to build torchvision's model) and here (in
the tests), so both sides hold bit-identical weights; :func:`fingerprint` checks it. Detections of
this model are deterministic and plentiful but mean nothing: it has never seen a labelled image.
"""
from __future__ import annotations

import collections
import hashlib
import zlib
from pathlib import Path

import numpy as np

__all__ = ["FIXTURE_SEED", "fixture_state_dict", "fixture_checkpoint", "fingerprint", "bn_stat_keys",
           "SCALES", "CALIBRATION", "FIXTURE_SOURCE"]

FIXTURE_SEED = 2019

#: Multipliers of the heads' default scales (the recipe; changing one changes every golden file).
SCALES = {
    "rpn_cls": 1.0,          # objectness logits of std ~1 (max ~5-10): a decisive top-k, and sigmoid
                             # scores short of 1.0, so that float32 ties do not decide NMS's order
    "rpn_bbox": 0.5,         # proposals move off their anchors, but not far
    "cls_score": 12.0,       # a confident classifier: many proposals clear the 0.05 score threshold
    "background": 4.0,       # the background logit's bias (the only bias): most proposals lose
    "bbox_pred": 1.0,        # class-specific boxes differ from the proposals by a few pixels
    "mask_logits": 6.0,      # mask probabilities near 0 or 1 away from the edges
}


def _rng(seed, key):
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def _normal(seed, key, shape, std):
    return (_rng(seed, key).standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)


def _uniform(seed, key, shape, bound):
    return ((_rng(seed, key).random(shape, dtype=np.float32) * 2 - 1) * np.float32(bound)).astype(np.float32)


def _zero_mean_rows(a):
    """Subtract each output unit's mean weight. The inputs of these layers come out of a ReLU, all
    >= 0, so a row's mean times the inputs' mean would be a constant offset per output: one class (or
    mask pixel sign, or objectness) would win everywhere regardless of the features."""
    flat = a.reshape(a.shape[0], -1)
    return (flat - flat.mean(axis=1, keepdims=True)).reshape(a.shape).astype(np.float32)


def _fan_in(shape):
    return int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])


def bn_stat_keys(keys):
    """The ``running_mean`` / ``running_var`` keys among ``keys`` (what calibration sets)."""
    return [k for k in keys if k.endswith(("running_mean", "running_var"))]


def fixture_state_dict(shapes: dict, calibration: dict | None = None, seed: int = FIXTURE_SEED):
    """``{torchvision key: float32 array}`` for ``shapes`` (``{key: shape}``, torchvision's key names
    of ``maskrcnn_resnet50_fpn``), in the given order.

    ``calibration``: ``{running_mean / running_var key: array}`` (from the golden script); without it
    the BN statistics are the identity (mean 0, var 1), which is what the calibration starts from."""
    out = collections.OrderedDict()
    for key, shape in shapes.items():
        shape = tuple(shape)
        fan_in = _fan_in(shape)
        if key.endswith("running_mean"):
            a = np.zeros(shape, np.float32)
        elif key.endswith("running_var"):
            a = np.ones(shape, np.float32)
        elif ".bn" in key or "downsample.1." in key:            # FrozenBN affine
            last = ".bn3." in key or "downsample.1." in key     # ends a residual branch: small, as trained
            if key.endswith("weight"):
                lo, hi = (0.2, 0.5) if last else (0.7, 1.3)
                a = (lo + (hi - lo) * _rng(seed, key).random(shape, dtype=np.float32)).astype(np.float32)
            else:
                a = _normal(seed, key, shape, 0.1)
        elif key.startswith("backbone.body"):                   # conv weights: He-normal
            a = _normal(seed, key, shape, np.sqrt(2.0 / fan_in))
        elif key.startswith("backbone.fpn"):                    # kaiming_uniform(a=1), bias 0
            a = (_uniform(seed, key, shape, np.sqrt(3.0 / fan_in)) if key.endswith("weight")
                 else np.zeros(shape, np.float32))
        elif key.startswith("rpn.head.conv"):
            a = (_normal(seed, key, shape, np.sqrt(2.0 / fan_in)) if key.endswith("weight")
                 else np.zeros(shape, np.float32))
        elif key.startswith("rpn.head.cls_logits"):
            a = (_zero_mean_rows(_normal(seed, key, shape, SCALES["rpn_cls"] / np.sqrt(fan_in)))
                 if key.endswith("weight") else np.zeros(shape, np.float32))
        elif key.startswith("rpn.head.bbox_pred"):
            a = (_normal(seed, key, shape, SCALES["rpn_bbox"] / np.sqrt(fan_in)) if key.endswith("weight")
                 else np.zeros(shape, np.float32))
        elif key.startswith("roi_heads.box_head"):               # nn.Linear's default
            bound = 1 / np.sqrt(shapes[key.replace("bias", "weight")][1])
            a = _uniform(seed, key, shape, bound)
        elif key.startswith("roi_heads.box_predictor.cls_score"):
            bound = SCALES["cls_score"] / np.sqrt(shapes["roi_heads.box_predictor.cls_score.weight"][1])
            if key.endswith("weight"):
                a = _zero_mean_rows(_uniform(seed, key, shape, bound))
            else:                                               # only the background has a bias
                a = np.zeros(shape, np.float32)
                a[0] = np.float32(SCALES["background"])
        elif key.startswith("roi_heads.box_predictor.bbox_pred"):
            bound = SCALES["bbox_pred"] / np.sqrt(shapes["roi_heads.box_predictor.bbox_pred.weight"][1])
            a = _uniform(seed, key, shape, bound)
        elif key.startswith("roi_heads.mask_predictor.mask_fcn_logits"):
            a = (_zero_mean_rows(_normal(seed, key, shape, SCALES["mask_logits"] / np.sqrt(fan_in)))
                 if key.endswith("weight") else np.zeros(shape, np.float32))
        elif key.startswith(("roi_heads.mask_head", "roi_heads.mask_predictor")):
            # mask convs (out, in, k, k) and the transposed conv (in, out, 2, 2): He over the taps
            fan = fan_in if "conv5_mask" not in key else shape[0]
            a = (_normal(seed, key, shape, np.sqrt(2.0 / fan)) if key.endswith("weight")
                 else np.zeros(shape, np.float32))
        else:
            raise KeyError(f"{key}: not a key of maskrcnn_resnet50_fpn")
        if calibration is not None and key in calibration:
            a = np.asarray(calibration[key], np.float32).reshape(shape)
        out[key] = a
    return out


def fingerprint(state: dict) -> str:
    """SHA-256 over the keys, shapes and bytes of ``state`` (little-endian float32), in key order."""
    h = hashlib.sha256()
    for key, a in state.items():
        a = np.ascontiguousarray(a, dtype="<f4")
        h.update(f"{key}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


#: The committed calibration of the FrozenBN statistics (in the repository, beside the golden files).
CALIBRATION = Path(__file__).resolve().parent.parent / "tests" / "golden" / "r50" / "calibration.npz"
FIXTURE_SOURCE = "calibrated fixture (mrcnn_np.fixture_weights): never trained, its detections mean nothing"


def fixture_checkpoint(out, calibration=CALIBRATION):
    """Write the calibrated fixture as an ``r50_fpn`` checkpoint at ``out`` (the layout
    ``mrcnn-np import-weights`` writes: 91 COCO labels, ``extra["source"]`` saying what it is) and
    return its path. This is what the course and the fine-tuning example start from when torchvision's
    real COCO weights are not in the cache."""
    from .checkpoint import save_checkpoint
    from .import_weights import coco_extra, model_to_state_dict, state_dict_to_model
    from .model import build_model, get_config
    calibration = Path(calibration)
    if not calibration.is_file():
        raise FileNotFoundError(f"calibration: {calibration} not found; the fixture's BN statistics "
                                f"live in the repository (tests/golden/r50/), not in an installed wheel")
    model = build_model(get_config("r50_fpn"))
    shapes = {k: v.shape for k, v in model_to_state_dict(model).items()}
    state_dict_to_model(fixture_state_dict(shapes, dict(np.load(calibration))), model, "fixture")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(out, model, step=0, extra={**coco_extra(), "source": FIXTURE_SOURCE})
