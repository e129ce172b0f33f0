"""Every kernels/*.cu compiles for an H100 (sm_90), both dtypes instantiated, without a GPU.

* nvcc -ptx: the source exactly as CuPy gets it (``_module.source``: mrcnn_common.cuh pasted in),
  plus a line that takes the address of every kernel in ``_module.KERNELS`` for float and double,
  which makes nvcc instantiate and emit each one. Skipped where nvcc is missing.
* NVRTC, CuPy's own compiler, when a libnvrtc is found (``$MRCNN_NVRTC`` = the path of
  libnvrtc.so, or one on the loader's path): the same source with the same name expressions and
  options as ``cupy.RawModule``. Skipped otherwise.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from mrcnn_np.backends.cupy import _module

NVCC = shutil.which("nvcc")
FILES = sorted(_module.KERNELS)


def _instantiations(filename):
    names = []
    for k in _module.KERNELS[filename]:
        if "<T>" in k:
            names += [k.replace("<T>", "<float>"), k.replace("<T>", "<double>")]
        else:
            names.append(k)
    return names


@pytest.fixture(scope="module")
def ptx(tmp_path_factory):
    """{file: (returncode, log, ptx text)}, compiled in parallel."""
    if NVCC is None:
        pytest.skip("nvcc not found: the PTX check of kernels/*.cu needs the CUDA toolkit's nvcc")
    out = tmp_path_factory.mktemp("ptx")
    procs = {}
    for f in FILES:
        src = out / f
        refs = ", ".join(f"(void*)&{k}" for k in _instantiations(f))
        src.write_text(_module.source(f) + f"\nvoid* mrcnn_ptx_instances[] = {{{refs}}};\n")
        cmd = [NVCC, "-ptx", "-arch=sm_90", "--fmad=false", str(src), "-o", str(out / (f + ".ptx"))]
        procs[f] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result = {}
    for f, p in procs.items():
        log, _ = p.communicate()
        text = (out / (f + ".ptx")).read_text() if p.returncode == 0 else ""
        result[f] = (p.returncode, log, text)
    return result


@pytest.mark.parametrize("filename", FILES)
def test_compiles_to_ptx_for_sm90(ptx, filename):
    rc, log, text = ptx[filename]
    assert rc == 0, f"nvcc -ptx failed on kernels/{filename}:\n{log}"
    assert "warning" not in log.lower(), log
    entries = re.findall(r"\.entry\s+(\w+)\(", text)
    expected = _instantiations(filename)
    assert len(entries) == len(expected), (entries, expected)
    for name in expected:
        base = name.split("<")[0]
        assert any(base in e for e in entries), (name, entries)


def test_every_source_inlines_the_common_header():
    for f in FILES:
        text = _module.source(f)
        assert '#include "mrcnn_common.cuh"' not in text
        assert "mr_block_sum" in text


# ---------------------------------------------------------------- NVRTC, as CuPy calls it
def _find_nvrtc():
    path = os.environ.get("MRCNN_NVRTC") or ctypes.util.find_library("nvrtc")
    if not path:
        return None
    try:
        return ctypes.CDLL(path)
    except OSError:
        return None


NVRTC = _find_nvrtc()


def _nvrtc_compile(lib, code, names, options):
    prog = ctypes.c_void_p()
    check = lambda rc, what: rc == 0 or pytest.fail(f"{what}: nvrtc error {rc}")  # noqa: E731
    check(lib.nvrtcCreateProgram(ctypes.byref(prog), code.encode(), b"kernel.cu", 0, None, None),
          "nvrtcCreateProgram")
    for n in names:
        check(lib.nvrtcAddNameExpression(prog, n.encode()), f"nvrtcAddNameExpression({n})")
    opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    rc = lib.nvrtcCompileProgram(prog, len(options), opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lowered = {}
    if rc == 0:
        for n in names:
            p = ctypes.c_char_p()
            lib.nvrtcGetLoweredName(prog, n.encode(), ctypes.byref(p))
            lowered[n] = p.value.decode()
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, log.value.decode(errors="replace"), lowered


@pytest.mark.skipif(NVRTC is None, reason="no libnvrtc found (set MRCNN_NVRTC=/path/to/libnvrtc.so "
                                          "to compile the kernels as CuPy does)")
@pytest.mark.parametrize("filename", FILES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiles_with_nvrtc_as_cupy_does(filename, dtype):
    names = _module.name_expressions(filename, dtype)
    rc, log, lowered = _nvrtc_compile(NVRTC, _module.source(filename), names,
                                      list(_module.OPTIONS) + ["--gpu-architecture=compute_90"])
    if rc != 0 and "libnvrtc-builtins" in log:
        pytest.skip(f"this libnvrtc cannot find its builtins library (put its folder on "
                    f"LD_LIBRARY_PATH): {log.strip()}")
    assert rc == 0, f"NVRTC failed on kernels/{filename}:\n{log}"
    assert set(lowered) == set(names)
