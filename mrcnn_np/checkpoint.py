"""Checkpoints: a model's parameters, the optimizer's state and the run's metadata in one ``.npz``.

File format (a NumPy ``.npz``, i.e. a zip of ``.npy`` arrays; ``np.load(path)`` opens it, no pickle)::

    param/<name>    every parameter array, e.g. ``param/backbone.stem.conv.weight``
    buffer/<name>   every buffer (state that is not trained, e.g. a frozen BatchNorm's statistics)
    optim/<name>    the optimizer's momentum buffer of that parameter (absent if saved without one)
    meta            0-d unicode array holding a JSON object:
                    {"format": "mrcnn-np checkpoint", "version": 1,
                     "config": dataclasses.asdict(model.config), "config_class": "module.ClassName",
                     "step": steps done, "extra": anything JSON-able (the training loop's bookkeeping)}

The file is written atomically (:func:`mrcnn_np.atomic.atomic_write_bytes`): the whole archive is
built in memory and then replaces the old file in one rename, so a crash during a save leaves the
previous checkpoint as it was. It is also byte-reproducible: ``np.savez`` stamps every zip entry with
the current time, so :func:`save_checkpoint` writes the same entries itself with a fixed timestamp
(1980-01-01, the earliest a zip can hold, as ``SOURCE_DATE_EPOCH`` tools do) and fixed permissions;
two saves of the same state are the same bytes (and the same hash).

Loading checks before it changes anything: a model gets its parameters only if the checkpoint was
saved from the same config, with exactly the same parameter names and shapes. Every problem raises
:class:`CheckpointError` naming the file and what differs.
"""
from __future__ import annotations

import dataclasses
import io
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes
from .backend import get_array_module, to_numpy

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "read_config", "read_metadata",
           "read_weights", "FORMAT", "VERSION"]

FORMAT = "mrcnn-np checkpoint"
VERSION = 1
_META = "meta"
_PARAM, _BUFFER, _OPTIM = "param/", "buffer/", "optim/"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the model/optimizer it is loaded into."""


# ----------------------------------------------------------------------------------------------------
# Saving.
# ----------------------------------------------------------------------------------------------------

def _config_dict(config) -> dict:
    """``asdict(config)`` as it reads back from JSON (tuples become lists), so dicts compare equal."""
    d = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return json.loads(json.dumps(d))


def save_checkpoint(path, model, optimizer=None, step: int = 0, extra=None) -> Path:
    """Write ``model``'s parameters, ``optimizer.state_dict()`` and the metadata to ``path`` atomically.

    ``extra`` must be JSON-able. Returns the path.
    """
    path = Path(path)
    meta = {"format": FORMAT, "version": VERSION, "config": _config_dict(model.config),
            "config_class": f"{type(model.config).__module__}.{type(model.config).__qualname__}",
            "step": int(step), "extra": extra}
    try:
        meta_json = json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the metadata is not JSON-able ({exc}); "
                              f"extra must hold only dicts, lists, strings, numbers, None") from exc
    arrays = {_PARAM + name: to_numpy(p.data) for name, p in model.named_parameters().items()}
    arrays.update({_BUFFER + name: to_numpy(b.data) for name, b in _buffers(model).items()})
    if optimizer is not None:
        arrays.update({_OPTIM + name: to_numpy(v) for name, v in optimizer.state_dict().items()})
    arrays[_META] = np.array(meta_json)                     # 0-d unicode array
    atomic_write_bytes(path, _npz_bytes(arrays))
    return path


_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)                          # the earliest date a zip entry can hold


def _npz_bytes(arrays: dict) -> bytes:
    """What ``np.savez(buf, **arrays)`` writes (uncompressed ``<name>.npy`` entries, zip64), but with
    a fixed date and permissions on every entry, so equal arrays always give equal bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, mode="w", compression=zipfile.ZIP_STORED) as zf:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16                 # -rw-r--r--, as an unpacked file
            with zf.open(info, "w", force_zip64=True) as f:  # force_zip64: as np.savez (gh-10776)
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------
# Reading.
# ----------------------------------------------------------------------------------------------------

# What np.load / zipfile raise on a file that is not a (complete) npz.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError)


def _corrupt(path) -> CheckpointError:
    return CheckpointError(f"corrupt or not an mrcnn-np checkpoint: {path}")


def _open(path):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        z = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise _corrupt(path) from exc
    if not isinstance(z, np.lib.npyio.NpzFile):             # a bare .npy array
        raise _corrupt(path)
    return z


def _parse_meta(z, path) -> dict:
    if _META not in z.files:
        raise CheckpointError(f"{path}: no metadata (entry {_META!r}) in the archive; "
                              f"not an mrcnn-np checkpoint")
    try:
        meta = json.loads(str(z[_META][()]))
    except (*_READ_ERRORS, json.JSONDecodeError) as exc:
        raise _corrupt(path) from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: metadata format is "
                              f"{meta.get('format') if isinstance(meta, dict) else meta!r}, "
                              f"expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')!r}, "
                              f"this mrcnn-np reads version {VERSION}")
    for key in ("config", "step"):
        if key not in meta:
            raise CheckpointError(f"{path}: metadata has no {key!r}")
    return meta


def read_metadata(path) -> dict:
    """The metadata of a checkpoint (``format, version, config, config_class, step, extra``),
    without reading the parameters."""
    with _open(path) as z:
        return _parse_meta(z, path)


def read_weights(path) -> tuple[dict, dict]:
    """``(metadata, {name: array})`` of a checkpoint: every parameter and buffer under its model name
    (the prefixes ``param/`` and ``buffer/`` dropped), as NumPy arrays; the optimizer state is left
    out. For loading into a model that is not the checkpoint's own (``train --init``)."""
    with _open(path) as z:
        meta = _parse_meta(z, path)
        try:
            weights = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith((_PARAM, _BUFFER))}
        except _READ_ERRORS as exc:
            raise _corrupt(path) from exc
    return meta, weights


def read_config(path) -> dict:
    """The config dict a checkpoint was saved with (rebuild it with ``ConfigClass.from_dict``)."""
    return read_metadata(path)["config"]


def _with_defaults(stored: dict, config) -> dict:
    """``stored`` with the fields it lacks at their defaults: a checkpoint saved before a config field
    existed was made by a model with that field's default (new fields default to the old behaviour)."""
    if not (dataclasses.is_dataclass(config) and isinstance(stored, dict)):
        return stored
    defaults = {f.name: f.default for f in dataclasses.fields(config)
                if f.default is not dataclasses.MISSING}
    return {**json.loads(json.dumps(defaults)), **stored}


def _first_difference(a, b, prefix=""):
    """The first (dotted field, a's value, b's value) where two JSON-like values differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return (prefix + k, a.get(k, "<absent>"), b.get(k, "<absent>"))
            diff = _first_difference(a[k], b[k], f"{prefix}{k}.")
            if diff:
                return diff
        return None
    return None if a == b else (prefix.rstrip("."), a, b)


def _buffers(model) -> dict:
    return model.named_buffers() if hasattr(model, "named_buffers") else {}


def _check_arrays(arrays, entries, prefix, kind, path):
    """Names and shapes of ``entries`` (``{name: Parameter or Buffer}``) must match the archive's
    ``prefix`` entries exactly; nothing is loaded until everything has been checked."""
    stored = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    for name in entries:
        if name not in stored:
            raise CheckpointError(f"{path}: {kind} {name!r} of the model is missing from the checkpoint")
    for name in stored:
        if name not in entries:
            raise CheckpointError(f"{path}: the checkpoint has a {kind} {name!r} that the model lacks")
    for name, p in entries.items():
        if tuple(stored[name].shape) != tuple(p.data.shape):
            raise CheckpointError(f"{path}: {kind} {name!r} has shape {tuple(stored[name].shape)} "
                                  f"in the checkpoint, {tuple(p.data.shape)} in the model")
    return stored


def _check_params(arrays, model, path):
    params, buffers = model.named_parameters(), _buffers(model)
    stored = _check_arrays(arrays, params, _PARAM, "parameter", path)
    stored_buffers = _check_arrays(arrays, buffers, _BUFFER, "buffer", path)
    return {**stored, **stored_buffers}, {**params, **buffers}


def load_checkpoint(path, model=None, optimizer=None) -> dict:
    """Read a checkpoint; given a model (and optimizer) load the parameters (and buffers) into them.

    Returns the metadata dict. Raises :class:`CheckpointError` if the file is missing or corrupt,
    if the model's config differs from the stored one (naming the first differing field), or if a
    parameter is missing, extra or of another shape (naming it). Nothing is changed on error.
    """
    with _open(path) as z:
        meta = _parse_meta(z, path)
        try:                                   # read everything now: a damaged entry fails here
            arrays = {k: z[k] for k in z.files if k != _META}
        except _READ_ERRORS as exc:
            raise _corrupt(path) from exc
    if model is None:
        return meta
    diff = _first_difference(_with_defaults(meta["config"], model.config), _config_dict(model.config))
    if diff:
        field, ours, theirs = diff
        raise CheckpointError(f"{path}: saved from another config: field {field!r} is {ours!r} in the "
                              f"checkpoint, {theirs!r} in the model")
    stored, params = _check_params(arrays, model, path)
    if optimizer is not None:
        optim_state = {k[len(_OPTIM):]: v for k, v in arrays.items() if k.startswith(_OPTIM)}
        if not optim_state:
            raise CheckpointError(f"{path}: no optimizer state in the checkpoint (saved without one)")
        try:
            # NOTE: load_state_dict checks every name and shape before it changes a buffer, and the
            # parameters were checked above: a mismatch leaves both model and optimizer untouched.
            optimizer.load_state_dict(optim_state)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
    for name, p in params.items():
        p.data[...] = get_array_module(p.data).asarray(stored[name], dtype=p.data.dtype)
    return meta
