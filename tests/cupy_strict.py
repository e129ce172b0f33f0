"""A stricter CuPy stand-in that behaves like a GPU where it matters for host/device traffic (a test
helper, and the engine of ``benchmarks/sync_report.py``).

:mod:`cupy_on_cpu` makes device arrays plain NumPy arrays, so it cannot see a host array handed to a
device op, nor a value read back to the host. Here device arrays are their own type,
``cupy.ndarray`` (a wrapper around a NumPy array), and:

* a host array (``numpy.ndarray``) mixed with a device array in an operation, or handed to a
  kernel, is a ``TypeError``, as CuPy raises it; so is ``numpy.asarray(device_array)`` (CuPy refuses
  the implicit conversion);
* every **device -> host transfer** is counted with the source line that asked for it: ``.get()``,
  ``cupy.asnumpy``, ``float()`` / ``int()`` / ``bool()`` / ``operator.index`` / ``.item()`` /
  ``.tolist()`` / printing, ``nonzero`` / ``flatnonzero`` / ``argwhere`` / ``unique`` / one-argument
  ``where`` (their output shape depends on the values), and a boolean-mask read or write
  (``a[mask]``, ``a[mask] = v``: CuPy syncs on both). Each of these makes the host wait for the GPU;
* every **host -> device upload** (``cupy.asarray(host)``, a host array or list stored into a device
  array) is counted the same way;
* every operation that would be a GPU launch (a ufunc, a NumPy function or array method returning
  a device array, a RawKernel call) is counted as a ``call``.

Use::

    with counting() as log:            # the stand-in must be active: see activate()
        ...
    log.syncs, log.uploads, log.calls, log.table()

The kernels themselves still run through :mod:`cupy_on_cpu`'s emulation (g++), so results are the
real launchers' results.
"""
from __future__ import annotations

import collections
import contextlib
import operator
import sys
import types
from pathlib import Path

import numpy as np

import cupy_on_cpu

ROOT = Path(__file__).resolve().parents[1]
_HERE = {str(Path(__file__).resolve()), str(Path(cupy_on_cpu.__file__).resolve())}
_NUMPY_DIR = str(Path(np.__file__).resolve().parent)
# frames in these files are not the site of a transfer: their caller is
_PASS_THROUGH = ("mrcnn_np/backend.py",)

#: NumPy functions whose output shape depends on the input's values (CuPy must sync to size them)
DATA_DEPENDENT = {"nonzero", "flatnonzero", "argwhere", "unique", "compress", "extract"}


class Log:
    """What happened on the 'device' while counting was on."""

    def __init__(self, call_sites: bool = False):
        self.sync_sites = collections.Counter()      # (kind, "file:line") -> count
        self.upload_sites = collections.Counter()
        self.calls = 0
        self.call_files = collections.Counter() if call_sites else None   # "file" -> device calls

    @property
    def syncs(self) -> int:
        return sum(self.sync_sites.values())

    @property
    def uploads(self) -> int:
        return sum(self.upload_sites.values())

    def table(self, per: float = 1.0) -> str:
        """The sites as a text table, most frequent first (counts divided by ``per``, e.g. steps)."""
        lines = [f"{'syncs':>7s}  {'kind':22s} site"]
        for (kind, site), n in self.sync_sites.most_common():
            lines.append(f"{n / per:7.4g}  {kind:22s} {site}")
        lines.append(f"{self.syncs / per:7.4g}  total device -> host syncs")
        lines.append("")
        lines.append(f"{'uploads':>7s}  {'kind':22s} site")
        for (kind, site), n in self.upload_sites.most_common():
            lines.append(f"{n / per:7.4g}  {kind:22s} {site}")
        lines.append(f"{self.uploads / per:7.4g}  total host -> device uploads")
        lines.append(f"{self.calls / per:7.4g}  device calls (ufuncs, functions, methods, kernels)")
        if self.call_files:
            lines.append("")
            lines.append(f"{'calls':>7s}  file")
            for f, n in self.call_files.most_common(12):
                lines.append(f"{n / per:7.4g}  {f}")
        return "\n".join(lines)


_log: Log | None = None


_RESOLVED: dict[str, str] = {}


def _resolved(fn: str) -> str:
    if fn not in _RESOLVED:
        _RESOLVED[fn] = str(Path(fn).resolve())
    return _RESOLVED[fn]


def _site() -> str:
    f = sys._getframe(2)
    while f is not None:
        fn = _resolved(f.f_code.co_filename)
        if fn not in _HERE and not fn.startswith(_NUMPY_DIR) and not fn.endswith(_PASS_THROUGH):
            try:
                fn = str(Path(fn).relative_to(ROOT))
            except ValueError:
                fn = Path(fn).name
            return f"{fn}:{f.f_lineno}"
        f = f.f_back
    return "?"


def _sync(kind: str) -> None:
    if _log is not None:
        _log.sync_sites[(kind, _site())] += 1


def _upload(kind: str) -> None:
    if _log is not None:
        _log.upload_sites[(kind, _site())] += 1


def _call() -> None:
    if _log is not None:
        _log.calls += 1
        if _log.call_files is not None:
            _log.call_files[_site().rsplit(":", 1)[0]] += 1


@contextlib.contextmanager
def counting(call_sites: bool = False):
    """Count transfers and calls inside the block (``call_sites``: also which file made each call);
    yields the :class:`Log`."""
    global _log
    previous, _log = _log, Log(call_sites)
    try:
        yield _log
    finally:
        _log = previous


# ------------------------------------------------------------------------- the device array type
def _host_error(what) -> TypeError:
    return TypeError(f"Unsupported type {type(what).__module__}.{type(what).__name__}: a host "
                     f"(NumPy) array mixed with a device array; move it with cupy.asarray(...)")


def _unwrap(v):
    """Device arrays -> their NumPy storage; a host ndarray is an error (as on a GPU)."""
    if isinstance(v, ndarray):
        return v._a
    if isinstance(v, np.ndarray):
        raise _host_error(v)
    if isinstance(v, (list, tuple)):
        return type(v)(_unwrap(x) for x in v)
    return v


def _wrap(r):
    if isinstance(r, np.ndarray):
        return ndarray(r)
    if isinstance(r, np.generic) and not isinstance(r, (np.str_, np.bytes_, np.void)):
        return ndarray(np.asarray(r))              # CuPy returns 0-d arrays, never scalars
    if isinstance(r, tuple):
        return tuple(_wrap(x) for x in r)
    if isinstance(r, list):
        return [_wrap(x) for x in r]
    return r


def _is_bool_mask(key) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, ndarray) and k.dtype == np.bool_ for k in keys)


class ndarray:
    """A device array: NumPy storage that only device operations may touch."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 1000

    def __init__(self, a: np.ndarray):
        self._a = a

    # -- what CuPy refuses or counts
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` "
                        "to construct a NumPy array explicitly.")

    def get(self, stream=None, order="C", out=None):
        _sync("get")
        return self._a.copy()

    def item(self, *args):
        _sync("item")
        return self._a.item(*args)

    def tolist(self):
        _sync("tolist")
        return self._a.tolist()

    def nonzero(self):
        _sync("nonzero")
        _call()
        return tuple(ndarray(i) for i in self._a.nonzero())

    def set(self, arr, stream=None):
        _upload("set")
        self._a[...] = arr

    def __float__(self):
        _sync("float()")
        return float(self._a)

    def __int__(self):
        _sync("int()")
        return int(self._a)

    def __index__(self):
        _sync("index")
        return operator.index(self._a)

    def __bool__(self):
        _sync("bool()")
        return bool(self._a)

    def __complex__(self):
        _sync("complex()")
        return complex(self._a)

    def __repr__(self):
        _sync("repr")
        return repr(self._a).replace("array(", "cupy.array(", 1)

    def __str__(self):
        _sync("str")
        return str(self._a)

    def __format__(self, spec):
        _sync("format")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __contains__(self, v):
        _sync("in")
        return v in self._a

    # -- shape and layout: host metadata, free
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    T = property(lambda self: ndarray(self._a.T))
    base = property(lambda self: None if self._a.base is None else ndarray(self._a.base))

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        for i in range(len(self._a)):
            yield _wrap(self._a[i])

    def __reduce__(self):       # pickling copies to the host, as CuPy does
        _sync("pickle")
        return (_rebuild, (self._a.copy(),))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    # -- indexing
    def __getitem__(self, key):
        if _is_bool_mask(key):
            _sync("boolean-mask read")
        key = _index_key(key)
        _call()
        return _wrap(self._a[key])

    def __setitem__(self, key, value):
        if _is_bool_mask(key):
            _sync("boolean-mask write")
        key = _index_key(key)
        if isinstance(value, np.ndarray) and not isinstance(value, ndarray) and value.ndim > 0:
            _upload("setitem from host")
        elif isinstance(value, (list, tuple)):
            _upload("setitem from list")
        _call()
        self._a[key] = value._a if isinstance(value, ndarray) else value

    # -- NumPy's protocols: compute on the storage, wrap the result
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = _unwrap(inputs)
        if "out" in kwargs:
            kwargs["out"] = _unwrap(kwargs["out"])
        _call()
        return _wrap(getattr(ufunc, method)(*inputs, **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        name = func.__name__
        if name in DATA_DEPENDENT or (name == "where" and len(args) + len(kwargs) == 1):
            _sync(name)
        _call()
        return _wrap(func(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))

    # -- every other method (reshape, sum, astype, ...): on the storage, result wrapped
    def __getattr__(self, name):
        if name.startswith("__"):           # __array_interface__, buffer protocol...: not a device's
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)

        def method(*args, **kwargs):
            _call()
            return _wrap(attr(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))
        return method


def _rebuild(a):
    return ndarray(a)


def _index_key(key):
    keys = key if isinstance(key, tuple) else (key,)
    out = []
    for k in keys:
        if isinstance(k, ndarray):
            out.append(k._a)
        elif isinstance(k, np.ndarray):
            _upload("index from host")             # CuPy copies a host index array to the device
            out.append(k)
        elif isinstance(k, list):
            _upload("index from list")
            out.append(k)
        else:
            out.append(k)
    return tuple(out) if isinstance(key, tuple) else out[0]


def _binary(ufunc, reflected=False, inplace=False):
    if inplace:
        def op(self, other):
            self.__array_ufunc__(ufunc, "__call__", self, other, out=(self,))
            return self
    elif reflected:
        def op(self, other):
            return self.__array_ufunc__(ufunc, "__call__", other, self)
    else:
        def op(self, other):
            return self.__array_ufunc__(ufunc, "__call__", self, other)
    return op


for _name, _uf in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                   ("truediv", np.true_divide), ("floordiv", np.floor_divide), ("mod", np.remainder),
                   ("pow", np.power), ("matmul", np.matmul), ("and", np.bitwise_and),
                   ("or", np.bitwise_or), ("xor", np.bitwise_xor), ("lshift", np.left_shift),
                   ("rshift", np.right_shift)]:
    setattr(ndarray, f"__{_name}__", _binary(_uf))
    setattr(ndarray, f"__r{_name}__", _binary(_uf, reflected=True))
    setattr(ndarray, f"__i{_name}__", _binary(_uf, inplace=True))
for _name, _uf in [("lt", np.less), ("le", np.less_equal), ("eq", np.equal), ("ne", np.not_equal),
                   ("gt", np.greater), ("ge", np.greater_equal)]:
    setattr(ndarray, f"__{_name}__", _binary(_uf))
for _name, _uf in [("neg", np.negative), ("pos", np.positive), ("abs", np.absolute),
                   ("invert", np.invert)]:
    setattr(ndarray, f"__{_name}__", lambda self, _uf=_uf: self.__array_ufunc__(_uf, "__call__", self))
ndarray.__hash__ = None
ndarray.__module__ = "cupy"


# ------------------------------------------------------------------------------- the module
_CREATE = {"asarray", "array", "ascontiguousarray", "asanyarray", "asfortranarray"}


def _is_host(v) -> bool:
    if isinstance(v, ndarray):
        return False
    if isinstance(v, np.ndarray):
        return True
    if isinstance(v, (list, tuple)):
        return any(_is_host(x) or isinstance(x, (int, float, bool, np.generic)) for x in v)
    return False


def _function(name, fn):
    if name in _CREATE:
        def create(a, *args, **kwargs):
            if _is_host(a):
                _upload(name)
            _call()
            if isinstance(a, ndarray):
                a = a._a
            elif isinstance(a, (list, tuple)):
                a = [x._a if isinstance(x, ndarray) else x for x in a]
            return ndarray(np.asarray(fn(a, *args, **kwargs)))
        return create

    def call(*args, **kwargs):
        if name in DATA_DEPENDENT or (name == "where" and len(args) + len(kwargs) == 1):
            _sync(name)
        _call()
        return _wrap(fn(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))
    call.__name__ = name
    return call


class _Ufunc:
    def __init__(self, uf):
        self._uf = uf

    def __call__(self, *args, **kwargs):
        return _function(self._uf.__name__, self._uf)(*args, **kwargs)

    def __getattr__(self, name):        # reduce, accumulate, at, outer
        return _function(name, getattr(self._uf, name))


def _asnumpy(a, stream=None, order="C", out=None):
    if isinstance(a, ndarray):
        return a.get()
    return np.asarray(a)


def _get_array_module(*args):
    return cp_module if any(isinstance(a, ndarray) for a in args) else np


cp_module: types.ModuleType | None = None


def make_module() -> types.ModuleType:
    """A module named ``cupy`` with distinct device arrays; kernels run on :mod:`cupy_on_cpu`."""
    global cp_module
    cp = types.ModuleType("cupy")
    cp.ndarray = ndarray
    cp.asnumpy = _asnumpy
    cp.get_array_module = _get_array_module
    base = cupy_on_cpu.make_module()

    class RawModule(base.RawModule):
        def get_function(self, name):
            k = super().get_function(name)

            def launch(grid, block, args, shared_mem=0):
                _call()
                host = [a for a in args if isinstance(a, np.ndarray) and not isinstance(a, np.generic)]
                if host:
                    raise TypeError(f"{name}: a kernel argument is a host numpy.ndarray "
                                    f"(shape {host[0].shape}); kernels read device memory only")
                return k(grid, block, [a._a if isinstance(a, ndarray) else a for a in args], shared_mem)
            return launch

    cp.RawModule = RawModule
    stream = types.SimpleNamespace(ptr=0, synchronize=lambda: _sync("stream.synchronize"))
    cp.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
                                    get_current_stream=lambda: stream,
                                    Device=lambda *a: types.SimpleNamespace(synchronize=lambda: _sync("Device.synchronize")))
    # CuPy's sorts are stable whatever ``kind`` says
    cp.argsort = _function("argsort", lambda a, axis=-1, kind=None: np.argsort(a, axis=axis, kind="stable"))
    cp.sort = _function("sort", lambda a, axis=-1, kind=None: np.sort(a, axis=axis, kind="stable"))
    cp.random = types.SimpleNamespace(
        default_rng=lambda *a, **k: _RandomProxy(np.random.default_rng(*a, **k)))

    def getattr_(name):
        obj = getattr(np, name)
        if isinstance(obj, np.ufunc):
            return _Ufunc(obj)
        if callable(obj) and not isinstance(obj, type):
            return _function(name, obj)
        return obj
    cp.__getattr__ = getattr_
    cp_module = cp
    return cp


class _RandomProxy:
    """``cupy.random.Generator``: draws land on the device."""

    def __init__(self, g):
        self._g = g

    def __getattr__(self, name):
        fn = getattr(self._g, name)

        def draw(*args, **kwargs):
            _call()
            return _wrap(np.asarray(fn(*_unwrap(args), **kwargs)))
        return draw


@contextlib.contextmanager
def activate():
    """Make this stand-in ``cupy`` and the ``cupy`` backend active for the block; everything it
    touched is put back afterwards (:func:`cupy_on_cpu.activate`)."""
    with cupy_on_cpu.activate(make_module) as cp:
        yield cp


def install():
    """What :func:`activate` does, for the rest of the process (nothing is put back): the stand-in
    becomes ``cupy`` and the ``cupy`` backend is active. For a process that runs on the stand-in
    throughout, e.g. a notebook kernel whose ``sitecustomize`` calls it (tests/test_notebooks.py)."""
    import mrcnn_np
    from mrcnn_np import backend
    from mrcnn_np.backends.cupy import _module
    for k in cupy_on_cpu._cupy_modules():
        del sys.modules[k]
    backend._loaded.pop("cupy", None)
    sys.modules["cupy"] = cp = make_module()
    _module.clear_cache()
    mrcnn_np.set_backend("cupy")
    return cp
