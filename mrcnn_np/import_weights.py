"""torchvision's Mask R-CNN weights -> an ``r50_fpn`` checkpoint: the key table, the import, the download.

``mrcnn-np import-weights maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth --out r50_coco.npz`` reads the file
with :mod:`mrcnn_np.pth` (no PyTorch, nothing in the file run), renames its keys through
:data:`KEY_TABLE`, checks every name and shape against the ``r50_fpn`` model, and writes a checkpoint
that carries the config, the 91 COCO labels with torchvision's names (``N/A`` included) and the
identity map label -> COCO category id (torchvision's label *is* the category id).

Key names. torchvision renamed a few modules after the COCO file was released (2019), and renames on
load, by the module version stored in the file's ``_metadata``. The file holds the old spellings;
today's torchvision writes the new ones. Both are accepted (:data:`OLD_NAMES` turns old into new);
``num_batches_tracked`` (plain BatchNorm's counter) is ignored.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.request
from pathlib import Path

import numpy as np

from .backend import get_array_module
from .pth import WeightFileError, load_state_dict

__all__ = ["KEY_TABLE", "OLD_NAMES", "COCO_CATEGORIES", "R50_COCO_URL", "torchvision_to_ours",
           "ours_to_torchvision", "state_dict_to_model", "model_to_state_dict", "import_weights",
           "download_weights", "default_cache_dir", "WeightFileError"]

#: torchvision's ``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``. The 8 hex digits in the name are the first
#: digits of the file's SHA-256 (torch.hub's convention, checked by ``--download``).
R50_COCO_URL = "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"

#: ``meta["categories"]`` of those weights: index = label = COCO category id (background at 0).
COCO_CATEGORIES = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack",
    "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana",
    "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv",
    "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "N/A", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush")

# ----------------------------------------------------------------------------------------------------
# The key table: every torchvision key and the mrcnn-np parameter or buffer it becomes, in one place.
#   {L}  torchvision's ResNet layer 1..4, our stage {S} = L - 1      {B}, {i}  block / conv index
#   {p}  weight | bias                                                {bn} a FrozenBN's four buffers
# ----------------------------------------------------------------------------------------------------
KEY_TABLE = (
    # ResNet-50 body (torchvision's IntermediateLayerGetter keeps conv1..layer4)
    ("backbone.body.conv1.weight", "backbone.stem.conv.weight"),
    ("backbone.body.bn1.{bn}", "backbone.stem.norm.{bn}"),
    ("backbone.body.layer{L}.{B}.conv{i}.weight", "backbone.stages.{S}.layers.{B}.conv{i}.conv.weight"),
    ("backbone.body.layer{L}.{B}.bn{i}.{bn}", "backbone.stages.{S}.layers.{B}.conv{i}.norm.{bn}"),
    ("backbone.body.layer{L}.0.downsample.0.weight", "backbone.stages.{S}.layers.0.shortcut.conv.weight"),
    ("backbone.body.layer{L}.0.downsample.1.{bn}", "backbone.stages.{S}.layers.0.shortcut.norm.{bn}"),
    # FPN: inner (lateral 1x1) and layer (output 3x3) blocks
    ("backbone.fpn.inner_blocks.{i}.0.{p}", "fpn.lateral.{i}.{p}"),
    ("backbone.fpn.layer_blocks.{i}.0.{p}", "fpn.output.{i}.{p}"),
    # RPN head
    ("rpn.head.conv.0.0.{p}", "rpn.head.conv.{p}"),
    ("rpn.head.cls_logits.{p}", "rpn.head.cls.{p}"),
    ("rpn.head.bbox_pred.{p}", "rpn.head.bbox.{p}"),
    # box head (TwoMLPHead) and predictor (FastRCNNPredictor)
    ("roi_heads.box_head.fc{i}.{p}", "roi_heads.box_head.fc{i}.{p}"),
    ("roi_heads.box_predictor.cls_score.{p}", "roi_heads.box_head.cls_score.{p}"),
    ("roi_heads.box_predictor.bbox_pred.{p}", "roi_heads.box_head.bbox_pred.{p}"),
    # mask head (MaskRCNNHeads) and predictor (MaskRCNNPredictor)
    ("roi_heads.mask_head.{i}.0.{p}", "roi_heads.mask_head.convs.{i}.{p}"),
    ("roi_heads.mask_predictor.conv5_mask.{p}", "roi_heads.mask_head.deconv.{p}"),
    ("roi_heads.mask_predictor.mask_fcn_logits.{p}", "roi_heads.mask_head.logits.{p}"),
)

#: The 2019 file's spellings -> today's (torchvision's ``_load_from_state_dict`` renames, module
#: version < 2). ``mask_fcn{n}`` counts from 1, its new index from 0.
OLD_NAMES = (
    (r"backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.(weight|bias)", r"backbone.fpn.\1_blocks.\2.0.\3"),
    (r"rpn\.head\.conv\.(weight|bias)", r"rpn.head.conv.0.0.\1"),
    (r"roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)",
     lambda m: f"roi_heads.mask_head.{int(m.group(1)) - 1}.0.{m.group(2)}"),
)

_FIELDS = {"L": r"(?P<L>[1-4])", "S": r"(?P<S>[0-3])", "B": r"(?P<B>\d+)", "i": r"(?P<i>\d+)",
           "p": r"(?P<p>weight|bias)", "bn": r"(?P<bn>weight|bias|running_mean|running_var)"}


def _compile(template: str) -> re.Pattern:
    parts = re.split(r"(\{\w+\})", template)
    return re.compile("".join(_FIELDS[p[1:-1]] if p.startswith("{") else re.escape(p) for p in parts) + "$")


_FORWARD = [(_compile(tv), ours) for tv, ours in KEY_TABLE]
_BACKWARD = [(_compile(ours), tv) for tv, ours in KEY_TABLE]


def _fill(template: str, fields: dict) -> str:
    f = dict(fields)
    if "L" in f:
        f["S"] = str(int(f["L"]) - 1)
    if "S" in f:
        f["L"] = str(int(f["S"]) + 1)
    return template.format(**f)


def _renamed(key: str) -> str:
    for pattern, repl in OLD_NAMES:
        new, n = re.subn(f"^{pattern}$", repl, key)
        if n:
            return new
    return key


def torchvision_to_ours(key: str) -> str | None:
    """A torchvision key (old or new spelling) -> the mrcnn-np name, or None if the table has none."""
    key = _renamed(key)
    for pattern, ours in _FORWARD:
        m = pattern.match(key)
        if m:
            return _fill(ours, m.groupdict())
    return None


def ours_to_torchvision(name: str) -> str | None:
    """An mrcnn-np parameter/buffer name -> today's torchvision key (the inverse of the table)."""
    for pattern, tv in _BACKWARD:
        m = pattern.match(name)
        if m:
            return _fill(tv, m.groupdict())
    return None


def _model_entries(model) -> dict:
    return {**model.named_parameters(), **model.named_buffers()}


def state_dict_to_model(state: dict, model, source="state_dict") -> list[str]:
    """Load torchvision's ``state`` (``{key: array}``) into ``model``, after checking everything.

    Every key must map to an entry of the model (``unexpected key``), every entry of the model must be
    given (``missing key``, with torchvision's name), with the same shape. Raises
    :class:`WeightFileError` naming ``source`` and the key; the model is unchanged on error.
    Returns the torchvision keys that were ignored (``num_batches_tracked``)."""
    entries = _model_entries(model)
    staged, ignored, seen = {}, [], {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            ignored.append(key)
            continue
        ours = torchvision_to_ours(key)
        if ours is None or ours not in entries:
            raise WeightFileError(f"{source}: unexpected key {key!r}: no parameter of the "
                                  f"{model.config.name} model has that name")
        if ours in seen:
            raise WeightFileError(f"{source}: keys {seen[ours]!r} and {key!r} are the same parameter "
                                  f"(old and new spellings both present)")
        seen[ours] = key
        target = entries[ours]
        if tuple(value.shape) != tuple(target.data.shape):
            raise WeightFileError(f"{source}: key {key!r} has shape {tuple(value.shape)}, the "
                                  f"{model.config.name} model's {ours!r} has {tuple(target.data.shape)}")
        if value.dtype.kind != "f":
            raise WeightFileError(f"{source}: key {key!r} has dtype {value.dtype}, expected floats")
        staged[ours] = value
    missing = [n for n in entries if n not in staged]
    if missing:
        raise WeightFileError(f"{source}: missing key {ours_to_torchvision(missing[0]) or missing[0]!r} "
                              f"({len(missing)} missing in all)")
    for name, value in staged.items():
        p = entries[name]
        p.data[...] = get_array_module(p.data).asarray(value, dtype=p.data.dtype)
    return ignored


def model_to_state_dict(model) -> dict:
    """The model's parameters and buffers under today's torchvision keys (``{key: np.ndarray}``), in
    torchvision's order as far as the table gives it: the inverse of :func:`state_dict_to_model`."""
    from .backend import to_numpy
    out = {}
    for name, p in _model_entries(model).items():
        key = ours_to_torchvision(name)
        if key is None:
            raise ValueError(f"{name}: no torchvision key in the table")
        out[key] = to_numpy(p.data)
    return out


def coco_extra() -> dict:
    """The checkpoint ``extra`` of an imported COCO model: the 91 names (``class_names[label]``, 0 the
    background) and the identity label -> category id map."""
    return {"class_names": list(COCO_CATEGORIES),
            "label_to_cat_id": {str(k): k for k in range(1, len(COCO_CATEGORIES))},
            "source": "torchvision maskrcnn_resnet50_fpn COCO_V1 (imported)"}


def import_weights(src, out, config: str = "r50_fpn") -> dict:
    """``src`` (a torchvision ``.pth``) -> the checkpoint ``out`` of preset ``config``; returns a report
    ``{"tensors", "ignored", "format", "out"}``. Nothing is written if anything is wrong."""
    from .checkpoint import save_checkpoint
    from .model import build_model, get_config
    from .pth import detect_format
    src, out = Path(src), Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; expected the checkpoint file to write (e.g. "
                         f"{out / 'r50_coco.npz'})")
    state = load_state_dict(src)
    model = build_model(get_config(config, num_classes=len(COCO_CATEGORIES) - 1))   # COCO's 90 labels
    ignored = state_dict_to_model(state, model, source=str(src))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, model, step=0, extra={**coco_extra(), "imported_from": src.name})
    return {"tensors": len(state) - len(ignored), "ignored": ignored, "format": detect_format(src),
            "out": out}


def default_cache_dir() -> Path:
    """``$MRCNN_CACHE``, else ``~/.cache/mrcnn-np``."""
    return Path(os.environ.get("MRCNN_CACHE") or Path.home() / ".cache" / "mrcnn-np")


_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")


def download_weights(url: str = R50_COCO_URL, cache_dir=None, sha256: str | None = None,
                     progress: bool = True) -> Path:
    """Fetch ``url`` into ``cache_dir`` (default :func:`default_cache_dir`) unless it is there already,
    and return its path. The SHA-256 is checked against ``sha256`` if given, and against the hex prefix
    in the file name (``name-<prefix>.pth``, torch.hub's convention) always; a mismatch deletes the
    download and raises ``ValueError``. Written to a temporary file, renamed when complete and checked.
    A file already in the cache is checked the same way before it is used."""
    from tqdm import tqdm
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = url.rsplit("/", 1)[-1]
    target = cache / name
    m = _HASH_IN_NAME.search(name)
    prefix = m.group(1) if m else None

    def check(path):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        if (sha256 and digest != sha256.lower()) or (prefix and not digest.startswith(prefix)):
            want = sha256 or f"{prefix}..."
            raise ValueError(f"{path}: SHA-256 {digest} does not match the expected {want}; the file "
                             f"is damaged or not {name}")
        return digest

    if target.is_file():
        check(target)
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{name}.part"
    try:
        try:
            response = urllib.request.urlopen(url, timeout=60)
        except OSError as exc:
            raise OSError(f"--download: cannot fetch {url} ({exc}); download it by other means and "
                          f"run mrcnn-np import-weights FILE") from None
        with response, open(tmp, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress,
                      file=sys.stderr) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
        if total is not None and tmp.stat().st_size != total:
            raise OSError(f"--download: {url} ended after {tmp.stat().st_size} of {total} bytes")
        check(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target
