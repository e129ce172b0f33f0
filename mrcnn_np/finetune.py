"""Fine-tuning: start a model from another run's weights (``mrcnn-np train --init CKPT``).

torchvision's recipe for "my own images, N classes, from the COCO model" (its detection tutorial):
build the model for the new class count, load every weight of the pre-trained one except the three
layers whose shape depends on the classes, and train with the bottom of the backbone frozen. Here::

    kept          every parameter and buffer of the checkpoint with the model's name and shape
    re-initialised the class-dependent predictors, when the label spaces differ:
                    roi_heads.box_head.cls_score   (K+1, 1024)    torchvision: box_predictor.cls_score
                    roi_heads.box_head.bbox_pred   (4(K+1), 1024) torchvision: box_predictor.bbox_pred
                    roi_heads.mask_head.logits     (K or K+1, ...) torchvision: mask_predictor.mask_fcn_logits
                  they keep the fresh model's initialisation (small, as torchvision's new predictors)
    frozen        the bottom 5 - N of (conv1, layer1..layer4), N = config.trainable_backbone_layers

The label spaces are the same when the checkpoint's class names equal the dataset's (COCO -> COCO:
:func:`coco_label_space` trains in the imported model's labels, which are COCO category ids), and then
the predictors are kept too. Anything else that does not match (a missing or extra name, another
shape) means another architecture: :class:`~mrcnn_np.checkpoint.CheckpointError` naming the first
such key and both shapes, and nothing is loaded. The optimizer starts afresh (no momentum carried
over) and the step count at 0.
"""
from __future__ import annotations

from .backend import get_array_module
from .checkpoint import CheckpointError, read_weights

__all__ = ["PREDICTORS", "init_from_checkpoint", "coco_label_space", "describe_init"]

#: The layers whose shape depends on the number of classes (by name prefix).
PREDICTORS = ("roi_heads.box_head.cls_score.", "roi_heads.box_head.bbox_pred.",
              "roi_heads.mask_head.logits.")

#: torchvision's names for them, for the message.
_TORCHVISION_NAMES = {"roi_heads.box_head.cls_score.": "box_predictor.cls_score",
                      "roi_heads.box_head.bbox_pred.": "box_predictor.bbox_pred",
                      "roi_heads.mask_head.logits.": "mask_predictor.mask_fcn_logits"}


def _shape(a) -> tuple:
    return tuple(int(d) for d in a.shape)


def init_from_checkpoint(model, path, class_names=None) -> dict:
    """Load the weights of checkpoint ``path`` into ``model``, re-initialising the predictors when the
    label spaces differ (module docstring). ``class_names``: the dataset's (index = label, 0 the
    background); the label spaces are the same when they equal the checkpoint's, or, where either is
    unknown, when the predictors' shapes agree.

    Returns ``{"source", "kept", "kept_numbers", "reinitialised" (names), "checkpoint_classes",
    "classes", "checkpoint_config"}``. Raises :class:`CheckpointError` (nothing loaded) on another
    architecture."""
    meta, stored = read_weights(path)
    ckpt_names = (meta.get("extra") or {}).get("class_names")
    entries = {**model.named_parameters(), **model.named_buffers()}
    same_labels = (list(ckpt_names) == list(class_names) if ckpt_names and class_names
                   else all(_shape(stored[n]) == _shape(p.data) for n, p in entries.items()
                            if n.startswith(PREDICTORS) and n in stored))
    arch = meta["config"].get("name", "?")
    staged, reinit = {}, []
    for name, p in entries.items():
        if name not in stored:
            raise CheckpointError(f"--init {path}: the {model.config.name} model's {name!r} "
                                  f"{_shape(p.data)} is not in the checkpoint (config {arch}): "
                                  f"another architecture")
        if name.startswith(PREDICTORS) and not same_labels:
            reinit.append(name)
            continue
        if _shape(stored[name]) != _shape(p.data):
            raise CheckpointError(f"--init {path}: {name!r} has shape {_shape(stored[name])} in the "
                                  f"checkpoint (config {arch}), {_shape(p.data)} in the "
                                  f"{model.config.name} model: another architecture")
        staged[name] = stored[name]
    extra = [n for n in stored if n not in entries]
    if extra:
        raise CheckpointError(f"--init {path}: the checkpoint (config {arch}) has {extra[0]!r} "
                              f"{_shape(stored[extra[0]])}, which the {model.config.name} model lacks: "
                              f"another architecture")
    for name, value in staged.items():
        p = entries[name]
        p.data[...] = get_array_module(p.data).asarray(value, dtype=p.data.dtype)
    return {"source": str(path), "kept": len(staged),
            "kept_numbers": int(sum(v.size for v in staged.values())), "reinitialised": reinit,
            "checkpoint_classes": int(meta["config"].get("num_classes", -1)),
            "classes": int(model.config.num_classes), "checkpoint_config": arch}


def coco_label_space(path, dataset_categories):
    """``(label_to_cat_id, class_names)`` of checkpoint ``path`` if training on ``dataset_categories``
    (COCO ``categories`` dicts) can stay in its label space: every category id is one of the
    checkpoint's and has the same name there (an imported COCO model and a COCO-format subset of
    COCO). Else None: the dataset's own labels 1..K, and new predictors."""
    from .checkpoint import read_metadata
    extra = read_metadata(path).get("extra") or {}
    names, mapping = extra.get("class_names"), extra.get("label_to_cat_id")
    if not names or not mapping:
        return None
    by_cat = {int(c): names[int(k)] for k, c in mapping.items() if int(k) < len(names)}
    if all(by_cat.get(c["id"]) == str(c.get("name", c["id"])) for c in dataset_categories):
        return {int(k): int(c) for k, c in mapping.items()}, list(names)
    return None


def describe_init(report: dict, model) -> str:
    """One line for stderr: what was kept, what was re-initialised, what is frozen."""
    backbone = model.backbone
    pieces = ["conv1", "layer1", "layer2", "layer3", "layer4"]
    frozen = pieces[:backbone.frozen]
    what = f"--init {report['source']}: kept {report['kept']} tensors ({report['kept_numbers'] / 1e6:.1f}M numbers)"
    if report["reinitialised"]:
        layers = sorted({_TORCHVISION_NAMES[p] for p in PREDICTORS
                         if any(n.startswith(p) for n in report["reinitialised"])})
        what += (f"; re-initialised {', '.join(layers)} for {report['classes']} classes "
                 f"(the checkpoint has {report['checkpoint_classes']})")
    else:
        what += f"; heads kept ({report['classes']} classes, the checkpoint's)"
    what += (f"; trainable backbone layers {5 - backbone.frozen} (frozen: {', '.join(frozen)})" if frozen
             else "; trainable backbone layers 5 (nothing frozen)")
    return what
