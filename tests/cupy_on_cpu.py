"""A stand-in for CuPy that runs the ``cupy`` backend's launchers on the CPU (a test helper).

Device arrays are NumPy arrays, and ``RawModule(code=...)`` compiles the very CUDA source the launcher
hands to it with g++ and ``kernels/cuda_cpu_emu.h``; ``get_function("roi_align_forward<float>")``
returns the emulation's host entry ``emu_roi_align_forward_f32`` (see the end of each .cu file).

A launch also checks the launcher against the kernel's C signature, parsed from the source: every
argument must have the kernel parameter's exact C type (``int`` <- ``np.int32``, ``index_t`` <-
``np.int64``, ``T`` <- a scalar of the module's dtype, ``double`` <- ``np.float64``, ``T*`` <- a
C-contiguous array of the module's dtype, ``int*`` <- int32, ...). On a GPU a wrong scalar type is
not an error but garbage (CuPy passes the bytes of whatever it gets), so this is the check that
catches it before a GPU ever runs the code.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

KERNELS = Path(__file__).resolve().parents[1] / "kernels"
GXX = shutil.which("g++")
GXX_FLAGS = ["-O1", "-std=c++17", "-DMRCNN_CPU_EMU", "-ffp-contract=off", "-pthread", "-x", "c++",
             "-shared", "-fPIC", "-I", str(KERNELS)]

_LIBS: dict[str, ctypes.CDLL] = {}
_TMP: Path | None = None


def _tmp() -> Path:
    global _TMP
    if _TMP is None:
        _TMP = Path(tempfile.mkdtemp(prefix="mrcnn_cuda_emu_"))
        atexit.register(shutil.rmtree, _TMP, True)
    return _TMP


def _key(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def compile_all(codes) -> list[ctypes.CDLL]:
    """Compile CUDA sources (texts) for the CPU emulation, in parallel, once per process each."""
    codes = list(codes)
    procs = {}
    for code in codes:
        k = _key(code)
        if k in _LIBS or k in procs:
            continue
        src, lib = _tmp() / f"{k}.cu", _tmp() / f"{k}.so"
        src.write_text(code)
        procs[k] = (subprocess.Popen([GXX, *GXX_FLAGS, str(src), "-o", str(lib)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
                    lib, code)
    errors = []
    for k, (p, lib, code) in procs.items():
        log, _ = p.communicate()
        if p.returncode:
            errors.append(f"g++ failed on:\n{code[:300]}...\n{log}")
        else:
            _LIBS[k] = ctypes.CDLL(str(lib))
    if errors:
        raise RuntimeError("\n\n".join(errors))
    return [_LIBS[_key(c)] for c in codes]


# ---------------------------------------------------------------- kernel signatures
_KERNEL_DEF = re.compile(r"__global__\s+void\s+(\w+)\s*\(([^)]*)\)")
_POINTERS = {"T*": None, "int*": np.int32, "long long*": np.int64, "mask_t*": np.uint64,
             "unsigned char*": np.uint8, "double*": np.float64}
_SCALARS = {"int": np.int32, "index_t": np.int64, "long long": np.int64, "double": np.float64,
            "T": None}


def signatures(code: str) -> dict[str, list[str]]:
    """{kernel name: [C type of each parameter]} (``const`` and ``__restrict__`` dropped)."""
    out = {}
    for name, params in _KERNEL_DEF.findall(code):
        types_ = []
        for p in params.split(","):
            p = re.sub(r"\b(const|__restrict__)\b", " ", p).replace("*", " * ").split()
            types_.append(" ".join(p[:-1]).replace(" *", "*"))
        out[name] = types_
    return out


class RawKernel:
    def __init__(self, fn, name, ctypes_, dtype):
        self.fn, self.name, self.ctypes, self.dtype = fn, name, ctypes_, dtype
        self.fn.restype = None

    def _arg(self, i, ctype, a):
        where = f"{self.name}: argument {i} ({ctype})"
        if ctype.endswith("*"):
            want = self.dtype if _POINTERS[ctype] is None else np.dtype(_POINTERS[ctype])
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{where}: expected a device array, got {type(a).__name__}")
            if a.dtype != want:
                raise TypeError(f"{where}: expected a {want} array, got {a.dtype}")
            if not a.flags.c_contiguous:
                raise TypeError(f"{where}: array is not C-contiguous")
            return ctypes.c_void_p(a.ctypes.data)
        want = self.dtype.type if _SCALARS[ctype] is None else _SCALARS[ctype]
        if type(a) is not want:
            raise TypeError(f"{where}: expected a {want.__name__} scalar, got {type(a).__name__} "
                            f"(CuPy would pass its bytes unchecked)")
        if want is np.int32:
            return ctypes.c_int(int(a))
        if want is np.int64:
            return ctypes.c_longlong(int(a))
        return ctypes.c_double(float(a))                    # T scalars travel as double

    def __call__(self, grid, block, args, shared_mem=0):
        grid, block = tuple(grid), tuple(block)
        assert all(isinstance(v, int) and v >= 1 for v in grid + block), (grid, block)
        assert grid[0] <= 2**31 - 1 and all(v <= 65535 for v in grid[1:]), grid
        assert block[0] <= 1024 and all(v == 1 for v in block[1:]), block
        if len(args) != len(self.ctypes):
            raise TypeError(f"{self.name}: {len(self.ctypes)} arguments expected, got {len(args)}")
        cargs = [self._arg(i, t, a) for i, (t, a) in enumerate(zip(self.ctypes, args))]
        gx, gy = (grid + (1,))[:2]
        self.fn(*cargs, ctypes.c_uint(gx), ctypes.c_uint(gy), ctypes.c_uint(block[0]))


class RawModule:
    """``cupy.RawModule(code=..., options=..., name_expressions=...)`` on the CPU."""

    def __init__(self, code=None, *, path=None, options=(), name_expressions=None, **kwargs):
        assert code is not None and path is None
        self.code, self.options = code, tuple(options)
        self.name_expressions = list(name_expressions or [])
        self.sigs = signatures(code)

    def get_function(self, name):
        (lib,) = compile_all([self.code])
        m = re.fullmatch(r"(\w+)<(float|double)>", name)
        if m:
            if name not in self.name_expressions:      # CuPy needs it among the name expressions
                raise KeyError(f"{name} is not one of this module's name_expressions")
            base, dtype = m.group(1), np.dtype(np.float32 if m.group(2) == "float" else np.float64)
            symbol = f"emu_{base}_{'f32' if m.group(2) == 'float' else 'f64'}"
        else:
            base, dtype, symbol = name, None, f"emu_{name}"
            if not re.search(rf'extern "C" __global__ void {name}\b', self.code):
                raise KeyError(f"{name}: not an extern \"C\" kernel (a template needs <type>)")
        return RawKernel(getattr(lib, symbol), name, self.sigs[base], dtype)


def make_module() -> types.ModuleType:
    """A module named ``cupy`` backed by NumPy, with what the launchers use."""
    cp = types.ModuleType("cupy")
    cp.__dict__.update({name: getattr(np, name) for name in (
        "ndarray", "asarray", "ascontiguousarray", "zeros", "empty", "empty_like", "zeros_like",
        "matmul", "int32", "int64", "uint64", "uint8", "bool_", "float32", "float64")})
    cp.argsort = lambda a, axis=-1: np.argsort(a, axis=axis, kind="stable")   # CuPy's is stable
    cp.asnumpy = np.asarray
    cp.RawModule = RawModule
    cp.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    cp.__getattr__ = lambda name: getattr(np, name)
    return cp


def _cupy_modules() -> list[str]:
    return [k for k in sys.modules
            if k == "cupy" or k.startswith("cupy.") or k.startswith("mrcnn_np.backends.cupy.")]


@contextlib.contextmanager
def activate(make=make_module):
    """``make()`` (a stand-in module) becomes ``cupy`` and the ``cupy`` backend is active for the
    block; afterwards the modules, the kernel registry, the loaded backends and the active backend are
    put back (launchers bound to a stand-in must not outlive it: a real CuPy later in the session
    would find them)."""
    import mrcnn_np
    from mrcnn_np import backend, dispatch
    from mrcnn_np.backends.cupy import _module
    saved = {k: sys.modules.pop(k) for k in _cupy_modules()}
    saved_kernels, saved_loaded = dict(dispatch._KERNELS), dict(backend._loaded)
    previous = backend.get_backend().name
    backend._loaded.pop("cupy", None)
    sys.modules["cupy"] = cp = make()
    _module.clear_cache()
    try:
        mrcnn_np.set_backend("cupy")
        yield cp
    finally:
        mrcnn_np.set_backend(previous)
        for k in _cupy_modules():
            del sys.modules[k]
        sys.modules.update(saved)
        dispatch._KERNELS.clear()
        dispatch._KERNELS.update(saved_kernels)
        backend._loaded.clear()
        backend._loaded.update(saved_loaded)
        _module.clear_cache()
