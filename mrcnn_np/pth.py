"""PyTorch ``.pth`` state_dict files, read and written without PyTorch, and without running their code.

A ``.pth`` file is a *pickle*: a program for Python's pickle machine, which may import and call any
function it names (``os.system`` included). ``pickle.load`` (``torch.load(weights_only=False)``) runs
that program. This reader never does: every global the pickle names is checked against a short
allowlist before anything is called, and the few it allows build inert placeholders.

The two formats torch writes (``../shared/r50-notes.md``, section 9, has the byte-level details):

* **zip** (torch >= 1.6, the default): a STORED zip with one top-level folder ``<p>/``;
  ``<p>/data.pkl`` is the pickle, ``<p>/data/<key>`` the raw bytes of storage ``key``,
  ``<p>/byteorder`` ``little`` (absent in old files: little).
* **legacy** (torch < 1.6, or ``_use_new_zipfile_serialization=False``; torchvision's 2019 Mask R-CNN
  file is one): five pickles in a row: the magic number ``0x1950a86a20f9469cfc6c``, the protocol
  version 1001, a ``sys_info`` dict (byte order, type sizes), the state_dict pickle, the sorted list
  of storage keys; then, per key in that order, an int64 element count and the raw bytes.

In both, a tensor is pickled as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
requires_grad, backward_hooks)`` where ``storage`` is a *persistent id*
``('storage', torch.FloatStorage, key, location, numel[, view_metadata])``.

What the unpickler allows (:data:`ALLOWED_GLOBALS`): ``collections.OrderedDict`` (the dict, and the
empty ``backward_hooks``), ``torch._utils._rebuild_tensor_v2`` and ``_rebuild_parameter``, and the
``torch.*Storage`` types, which become inert dtype markers. Anything else (``os.system``,
``builtins.eval``, ``subprocess.Popen``, ...) is refused by name twice over: first by a scan of the
pickle's opcodes (``pickletools.genops``) before unpickling starts, then in ``find_class``, where the
pickle machine looks up every GLOBAL / STACK_GLOBAL / INST. Persistent ids are checked (an allowed
storage type, a key present in the file, an element count that fits its bytes), every tensor's
``offset + sum((size - 1) * stride)`` is checked against its storage before a view is made, and each
tensor comes out as a fresh NumPy array copied from validated bytes. BUILD (``__setstate__``) is
accepted only on the state dict (torch stores the modules' ``_metadata`` that way).

:func:`save_state_dict` writes both formats (for fixtures, and to hand weights back to torchvision);
``benchmarks/torchvision_golden.py`` checks that ``torch.load`` reads what it writes.
"""
from __future__ import annotations

import collections
import io
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["WeightFileError", "load_state_dict", "save_state_dict", "detect_format", "ALLOWED_GLOBALS",
           "LEGACY_MAGIC"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

#: torch storage type -> NumPy dtype (bfloat16 has no NumPy dtype: read as uint16 and widened).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"), "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"), "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"), "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

#: Every ``(module, name)`` a state_dict pickle may name; nothing else is ever looked up.
ALLOWED_GLOBALS = frozenset(
    [("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
     ("torch._utils", "_rebuild_parameter")] + [("torch", name) for name in _STORAGE_DTYPES])


class WeightFileError(ValueError):
    """A ``.pth`` file that is unreadable, truncated, unsafe or not a state_dict; the message names
    the file and what is wrong (a refused global by its name)."""


# ----------------------------------------------------------------------------------------------------
# Inert stand-ins for what the allowed globals build.
# ----------------------------------------------------------------------------------------------------

class _StorageType:
    """What ``torch.FloatStorage`` & co. become: a name and a dtype, nothing callable."""

    def __init__(self, name):
        self.name, self.dtype = name, _STORAGE_DTYPES[name]

    def __repr__(self):
        return f"torch.{self.name}"


class _StorageRef:
    """A storage named by a persistent id; its bytes are attached once the file has been read."""

    __slots__ = ("key", "dtype", "numel", "bfloat16", "data", "view")

    def __init__(self, key, storage_type, numel, view=None):
        self.key, self.numel, self.view = key, numel, view
        self.bfloat16 = storage_type.name == "BFloat16Storage"
        self.dtype = storage_type.dtype
        self.data = None                                   # np.ndarray (numel,) once read


class _TensorRef:
    """``_rebuild_tensor_v2``'s result: which storage, offset, size and stride (checked later)."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __setstate__(self, state):                       # BUILD on a tensor: refused
        raise pickle.UnpicklingError("BUILD on a tensor is not part of a state_dict")


class _StateDict(collections.OrderedDict):
    """``collections.OrderedDict`` as the unpickler builds it: BUILD may set ``_metadata`` only."""

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]                               # (dict state, slot state) form
        if not (isinstance(state, dict) and set(state) <= {"_metadata"}):
            raise pickle.UnpicklingError("BUILD on the state dict may only set _metadata")
        if "_metadata" in state:
            self._metadata = state["_metadata"]

    def __reduce__(self):                                # plain dicts when pickled again
        return (collections.OrderedDict, (list(self.items()),))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("_rebuild_tensor_v2: the first argument is not a storage")
    ints = (storage_offset, *size, *stride) if isinstance(size, tuple) and isinstance(stride, tuple) else None
    if ints is None or len(size) != len(stride) or not all(type(v) is int for v in ints):
        raise pickle.UnpicklingError("_rebuild_tensor_v2: offset, size and stride must be integers")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError("_rebuild_parameter: the first argument is not a tensor")
    return data


_CALLABLES = {("collections", "OrderedDict"): _StateDict,
              ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
              ("torch._utils", "_rebuild_parameter"): _rebuild_parameter}


# ----------------------------------------------------------------------------------------------------
# The unpickler.
# ----------------------------------------------------------------------------------------------------

def _refused(module, name) -> str:
    return (f"refused to load: the pickle names the global {module}.{name}, which a state_dict never "
            f"needs (allowed: {', '.join(sorted(f'{m}.{n}' for m, n in ALLOWED_GLOBALS))}); "
            f"nothing was run")


def _scan(data: bytes, path) -> None:
    """Refuse a pickle before unpickling if any opcode names a global outside the allowlist.

    GLOBAL and INST carry ``module name`` in their argument; STACK_GLOBAL takes the two strings pushed
    just before it (tracked here through the memo, as protocol 4 writes them); EXT* name globals by
    a registry code, which a state_dict never uses."""
    strings, memo = [], {}
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                if (module, attr) not in ALLOWED_GLOBALS:
                    raise WeightFileError(f"{path}: {_refused(module, attr)}")
            elif name == "STACK_GLOBAL":
                if len(strings) < 2 or (strings[-2], strings[-1]) not in ALLOWED_GLOBALS:
                    module, attr = (strings[-2], strings[-1]) if len(strings) >= 2 else ("?", "?")
                    raise WeightFileError(f"{path}: {_refused(module, attr)}")
            elif name in ("EXT1", "EXT2", "EXT4"):
                raise WeightFileError(f"{path}: refused to load: the pickle uses the {name} opcode "
                                      f"(a global from the copyreg registry); nothing was run")
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                strings.append(arg)
            elif name in ("MEMOIZE",) and strings:
                memo[len(memo)] = strings[-1]
            elif name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                memo[arg] = strings[-1]
            elif name in ("BINGET", "LONG_BINGET", "GET") and arg in memo:
                strings.append(memo[arg])
    except WeightFileError:
        raise
    except Exception as exc:          # genops raises ValueError and others on a damaged pickle
        raise WeightFileError(f"{path}: corrupt or truncated pickle ({exc})") from None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, path, storage_keys=None):
        super().__init__(file)
        self.path, self.storage_keys, self.storages = path, storage_keys, {}

    def find_class(self, module, name):
        if (module, name) in _CALLABLES:
            return _CALLABLES[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise WeightFileError(f"{self.path}: {_refused(module, name)}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid[:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"storage {key!r}: type {storage_type!r:.40} is not a torch storage")
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError(f"storage {key!r:.40}: malformed key or element count")
        if self.storage_keys is not None and key not in self.storage_keys:
            raise pickle.UnpicklingError(f"storage {key!r} is not in the file")
        if view is not None and not (isinstance(view, tuple) and len(view) == 3
                                     and isinstance(view[0], str) and type(view[1]) is int
                                     and type(view[2]) is int):
            raise pickle.UnpicklingError(f"storage {key!r}: malformed view {view!r:.60}")
        ref = self.storages.get(key)
        if ref is None:
            ref = self.storages[key] = _StorageRef(key, storage_type, numel)
        elif ref.dtype != storage_type.dtype:
            raise pickle.UnpicklingError(f"storage {key!r} is named with two types")
        if view is not None:                              # an old torch's view into a root storage
            return _StorageRef(view[0], storage_type, view[2], view=(ref, view[1]))
        return ref


def _unpickle(data: bytes, path, storage_keys=None):
    _scan(data, path)
    up = _Unpickler(io.BytesIO(data), path, storage_keys)
    try:
        obj = up.load()
    except WeightFileError:
        raise
    except Exception as exc:
        raise WeightFileError(f"{path}: corrupt or not a state_dict pickle ({type(exc).__name__}: {exc})") from None
    return obj, up.storages


def _plain_unpickle(f, path, what):
    """One of the legacy header pickles: plain values only (no globals at all)."""
    start = f.tell()
    try:
        for op, _, pos in pickletools.genops(f):
            if op.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "BUILD", "NEWOBJ",
                           "NEWOBJ_EX", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"):
                raise WeightFileError(f"{path}: the legacy header's {what} holds the opcode {op.name}; "
                                      f"refused, nothing was run")
            if op.name == "STOP":
                break
        end = f.tell()
        f.seek(start)
        return pickle.loads(f.read(end - start))
    except WeightFileError:
        raise
    except Exception as exc:
        raise WeightFileError(f"{path}: corrupt legacy header ({what}: {exc})") from None


# ----------------------------------------------------------------------------------------------------
# Reading.
# ----------------------------------------------------------------------------------------------------

def detect_format(path) -> str:
    """``"zip"``, ``"legacy"`` or ``"tar"`` from the first bytes; ``WeightFileError`` otherwise."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:2] == b"\x80\x02" and len(head) > 2:
        return "legacy"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    raise WeightFileError(f"{path}: not a PyTorch file (neither a zip archive nor a legacy torch pickle; "
                          f"first bytes {head[:8]!r})")


def _attach_zip(zf, prefix, storages, path, big_endian):
    for key, ref in storages.items():
        name = f"{prefix}data/{key}"
        try:
            raw = zf.read(name)
        except KeyError:
            raise WeightFileError(f"{path}: storage {key!r} is missing from the archive ({name})") from None
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise WeightFileError(f"{path}: truncated or corrupt archive entry {name} ({exc})") from None
        _set_bytes(ref, raw, path, big_endian)


def _set_bytes(ref, raw, path, big_endian=False):
    need = ref.numel * ref.dtype.itemsize
    if len(raw) < need:
        raise WeightFileError(f"{path}: storage {ref.key!r} holds {len(raw)} bytes, its {ref.numel} "
                              f"elements need {need} (truncated file?)")
    dt = ref.dtype.newbyteorder(">") if big_endian and ref.dtype.itemsize > 1 else ref.dtype
    ref.data = np.frombuffer(raw, dtype=dt, count=ref.numel)


def _read_zip(path):
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise WeightFileError(f"{path}: corrupt or truncated zip archive ({exc})") from None
    with zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise WeightFileError(f"{path}: not a torch zip archive (expected one <folder>/data.pkl, "
                                  f"found {len(pkl)})")
        prefix = pkl[0][: -len("data.pkl")]
        try:
            data = zf.read(pkl[0])
            order = zf.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in zf.namelist() else "little"
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise WeightFileError(f"{path}: truncated or corrupt archive ({exc})") from None
        keys = {n[len(prefix) + 5:] for n in zf.namelist() if n.startswith(prefix + "data/")}
        obj, storages = _unpickle(data, path, keys)
        if order not in ("little", "big"):
            raise WeightFileError(f"{path}: unknown byte order {order!r}")
        _attach_zip(zf, prefix, storages, path, order == "big")
    return obj, storages


def _read_legacy(path):
    with open(path, "rb") as f:
        magic = _plain_unpickle(f, path, "magic number")
        if magic != LEGACY_MAGIC:
            raise WeightFileError(f"{path}: not a legacy torch file (magic number {magic!r:.30})")
        version = _plain_unpickle(f, path, "protocol version")
        if version != _LEGACY_PROTOCOL:
            raise WeightFileError(f"{path}: legacy protocol version {version!r}, expected {_LEGACY_PROTOCOL}")
        sys_info = _plain_unpickle(f, path, "sys_info")
        if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
            raise WeightFileError(f"{path}: written on a big-endian machine (sys_info {sys_info!r:.80}); "
                                  f"not supported")
        start = f.tell()
        rest = f.read()
    # the state_dict pickle ends at its STOP; its length is found by walking the opcodes
    try:
        stop = next(pos for op, _, pos in pickletools.genops(rest) if op.name == "STOP") + 1
    except StopIteration:
        raise WeightFileError(f"{path}: truncated (the state_dict pickle never ends)") from None
    except Exception as exc:
        raise WeightFileError(f"{path}: corrupt or truncated pickle ({exc})") from None
    obj, storages = _unpickle(rest[:stop], path)
    g = io.BytesIO(rest[stop:])
    keys = _plain_unpickle(g, path, "storage key list")
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise WeightFileError(f"{path}: malformed storage key list")
    missing = [k for k in storages if k not in keys]
    if missing:
        raise WeightFileError(f"{path}: storage {missing[0]!r} is not in the file's storage list")
    for key in keys:
        head = g.read(8)
        if len(head) < 8:
            raise WeightFileError(f"{path}: truncated: storage {key!r} has no data (file ends at byte "
                                  f"{start + stop + g.tell()})")
        (count,) = struct.unpack("<q", head)
        ref = storages.get(key)
        itemsize = ref.dtype.itemsize if ref is not None else None
        if ref is None:                                    # its element size is unknown: cannot skip
            raise WeightFileError(f"{path}: storage {key!r} is listed but no tensor uses it")
        if count < 0 or count != ref.numel:
            raise WeightFileError(f"{path}: storage {key!r} has {count} elements on disk, the pickle "
                                  f"says {ref.numel}")
        raw = g.read(count * itemsize)
        if len(raw) < count * itemsize:
            raise WeightFileError(f"{path}: truncated: storage {key!r} needs {count * itemsize} bytes, "
                                  f"{len(raw)} remain")
        _set_bytes(ref, raw, path)
    return obj, storages


def _materialize(t: _TensorRef, name, path) -> np.ndarray:
    ref, offset = t.storage, t.offset
    if ref.view is not None:                               # view into a root storage
        root, view_offset = ref.view
        if root.data is None or view_offset < 0 or view_offset + ref.numel > root.numel:
            raise WeightFileError(f"{path}: {name}: storage view outside its root storage")
        data = root.data[view_offset: view_offset + ref.numel]
    else:
        data = ref.data
    if data is None:
        raise WeightFileError(f"{path}: {name}: its storage {ref.key!r} was never read")
    size, stride = t.size, t.stride
    if offset < 0 or any(s < 0 for s in size) or any(st < 0 for st in stride):
        raise WeightFileError(f"{path}: {name}: negative offset, size or stride")
    if 0 not in size:
        last = offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= data.shape[0]:
            raise WeightFileError(f"{path}: {name}: size {size} stride {stride} offset {offset} reaches "
                                  f"element {last} of a storage of {data.shape[0]}")
        item = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(data[offset:], shape=size,
                                               strides=tuple(st * item for st in stride), writeable=False)
        out = np.array(view, dtype=data.dtype.newbyteorder("="), order="C")
    else:
        out = np.zeros(size, dtype=data.dtype.newbyteorder("="))
    if ref.bfloat16:                                       # bfloat16 = the top 16 bits of a float32
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out


def load_state_dict(path) -> "collections.OrderedDict[str, np.ndarray]":
    """Read a torch ``state_dict`` file (zip or legacy format) as ``{key: np.ndarray}``, in file order.

    The module metadata torch stores (``_metadata``, ``{module: {"version": n}}``) is kept as the
    result's ``metadata`` attribute (``{}`` if absent). Raises :class:`WeightFileError` naming the file
    on anything unreadable or unsafe; no code from the file is ever run (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"{path}: no such file")
    fmt = detect_format(path)
    if fmt == "tar":
        raise WeightFileError(f"{path}: a tar-format torch file (torch < 0.4); re-save it with a newer torch")
    obj, _ = _read_zip(path) if fmt == "zip" else _read_legacy(path)
    if isinstance(obj, dict) and set(obj) >= {"state_dict"} and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]                            # a training checkpoint {"state_dict": ...}
    if not isinstance(obj, dict):
        raise WeightFileError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
    out = collections.OrderedDict()
    for key, value in obj.items():
        if not isinstance(key, str):
            raise WeightFileError(f"{path}: a key of the state_dict is a {type(key).__name__}, not a string")
        if not isinstance(value, _TensorRef):
            raise WeightFileError(f"{path}: {key}: a {type(value).__name__}, not a tensor")
        out[key] = _materialize(value, key, path)
    out.metadata = dict(getattr(obj, "_metadata", {}) or {})
    return out


# ----------------------------------------------------------------------------------------------------
# Writing: the same two formats, emitted opcode by opcode (no torch needed, nothing importable named).
# ----------------------------------------------------------------------------------------------------

_NP_TO_STORAGE = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                  np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
                  np.dtype(np.int32): "IntStorage", np.dtype(np.int16): "ShortStorage",
                  np.dtype(np.int8): "CharStorage", np.dtype(np.uint8): "ByteStorage",
                  np.dtype(bool): "BoolStorage"}


class _Emitter:
    """A protocol-2 pickle written opcode by opcode: enough for a state_dict."""

    def __init__(self):
        self.out = io.BytesIO()
        self.out.write(b"\x80\x02")                        # PROTO 2

    def op(self, b: bytes):
        self.out.write(b)

    def global_(self, module, name):
        self.op(b"c" + f"{module}\n{name}\n".encode())

    def str_(self, s: str):
        b = s.encode("utf-8")
        self.op(b"X" + struct.pack("<I", len(b)) + b)      # BINUNICODE

    def int_(self, v: int):
        if 0 <= v < 256:
            self.op(b"K" + bytes([v]))                     # BININT1
        elif -(2 ** 31) <= v < 2 ** 31:
            self.op(b"J" + struct.pack("<i", v))           # BININT
        else:
            n = (v.bit_length() + 8) // 8
            self.op(b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True))   # LONG1

    def tuple_(self, items, emit):
        if not items:
            self.op(b")")                                  # EMPTY_TUPLE
            return
        self.op(b"(")                                      # MARK
        for it in items:
            emit(it)
        self.op(b"t")                                      # TUPLE

    def value(self, v):
        if isinstance(v, bool):
            self.op(b"\x88" if v else b"\x89")
        elif isinstance(v, int):
            self.int_(v)
        elif isinstance(v, str):
            self.str_(v)
        elif v is None:
            self.op(b"N")
        elif isinstance(v, dict):
            self.op(b"}")                                  # EMPTY_DICT
            if v:
                self.op(b"(")
                for k, x in v.items():
                    self.value(k)
                    self.value(x)
                self.op(b"u")                              # SETITEMS
        else:
            raise TypeError(f"cannot emit {type(v).__name__}")

    def empty_ordered_dict(self):
        self.global_("collections", "OrderedDict")
        self.op(b")R")                                     # EMPTY_TUPLE, REDUCE

    def stop(self) -> bytes:
        self.op(b".")
        return self.out.getvalue()


def _state_pickle(arrays, metadata, legacy: bool) -> bytes:
    """The state_dict pickle, as torch writes it: ``OrderedDict`` of ``_rebuild_tensor_v2(storage_i, 0,
    shape, stride, False, OrderedDict())`` (storage ``i`` holds tensor ``i``, key ``"i"``), then the
    ``_metadata`` attribute by BUILD."""
    e = _Emitter()
    e.empty_ordered_dict()
    if arrays:
        e.op(b"(")                                         # MARK
    for i, (key, a) in enumerate(arrays):
        e.str_(key)
        e.global_("torch._utils", "_rebuild_tensor_v2")
        e.op(b"(")                                         # MARK: the call's arguments
        e.op(b"(")                                         # MARK: the persistent id
        e.str_("storage")
        e.global_("torch", _NP_TO_STORAGE[a.dtype])
        e.str_(str(i))
        e.str_("cpu")
        e.int_(int(a.size))
        if legacy:
            e.op(b"N")                                     # view_metadata
        e.op(b"tQ")                                        # TUPLE, BINPERSID
        e.int_(0)                                          # storage_offset
        e.tuple_([int(s) for s in a.shape], e.int_)
        e.tuple_([int(st // a.itemsize) for st in a.strides], e.int_)
        e.op(b"\x89")                                     # requires_grad: False
        e.empty_ordered_dict()                             # backward_hooks
        e.op(b"tR")                                        # TUPLE, REDUCE
    if arrays:
        e.op(b"u")                                         # SETITEMS
    if metadata:
        e.op(b"}")                                         # the BUILD state {"_metadata": ...}
        e.str_("_metadata")
        e.empty_ordered_dict()
        e.op(b"(")
        for module, info in metadata.items():
            e.str_(str(module))
            e.value(dict(info))
        e.op(b"u")
        e.op(b"sb")                                        # SETITEM, BUILD
    return e.stop()


def save_state_dict(path, state: dict, fmt: str = "zip", metadata: dict | None = None) -> Path:
    """Write ``{key: np.ndarray}`` as a torch state_dict file that ``torch.load`` reads: ``fmt="zip"``
    (torch >= 1.6's default; the top folder is named after the file's stem, as torch names it) or
    ``"legacy"`` (the pre-1.6 stream). ``metadata``: ``{module: {"version": n}}`` stored as torch stores
    ``_metadata`` (torchvision renames old keys by it). Written atomically."""
    from .atomic import atomic_write_bytes
    if fmt not in ("zip", "legacy"):
        raise ValueError(f"fmt: expected 'zip' or 'legacy', got {fmt!r}")
    arrays = []
    for key, a in state.items():
        a = np.ascontiguousarray(a)
        if a.dtype not in _NP_TO_STORAGE:
            raise ValueError(f"{key}: dtype {a.dtype} has no torch storage type")
        arrays.append((str(key), a.astype(a.dtype.newbyteorder("<"), copy=False)))
    path = Path(path)
    pkl = _state_pickle(arrays, metadata, legacy=(fmt == "legacy"))
    buf = io.BytesIO()
    if fmt == "legacy":
        for v in (LEGACY_MAGIC, _LEGACY_PROTOCOL,
                  {"protocol_version": _LEGACY_PROTOCOL, "little_endian": True,
                   "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            buf.write(pickle.dumps(v, protocol=2))
        buf.write(pkl)
        keys = sorted(str(i) for i in range(len(arrays)))
        buf.write(pickle.dumps(keys, protocol=2))
        for k in keys:
            a = arrays[int(k)][1]
            buf.write(struct.pack("<q", a.size))
            buf.write(a.tobytes())
    else:
        stem = path.stem or "archive"
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            def entry(name, data):
                info = zipfile.ZipInfo(f"{stem}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
                # torch aligns each record's data on 64 bytes: pad the local header's extra field
                header_len = 30 + len(info.filename.encode())
                offset = buf.tell() + header_len
                pad = (-offset - 4) % 64
                info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
                zf.writestr(info, data)
            entry("data.pkl", pkl)
            entry(".format_version", b"1")
            entry(".storage_alignment", b"64")
            entry("byteorder", b"little")
            for i, (_, a) in enumerate(arrays):
                entry(f"data/{i}", a.tobytes())
            entry("version", b"3\n")
    atomic_write_bytes(path, buf.getvalue())
    return path
