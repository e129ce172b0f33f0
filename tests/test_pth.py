"""The ``.pth`` reader and writer (mrcnn_np/pth.py): torch's own files, round trips, and files that
must be refused (malicious, truncated, corrupt, inconsistent) without running anything."""
from __future__ import annotations

import collections
import io
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mrcnn_np.pth import LEGACY_MAGIC, WeightFileError, detect_format, load_state_dict, save_state_dict

PTH = Path(__file__).parent / "golden" / "pth"


# ----------------------------------------------------------------------------------------------------
# Files torch wrote (benchmarks/torchvision_golden.py, torch 2.14.1)
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, fmt", [("small_zip.pth", "zip"), ("small_legacy.pth", "legacy")])
def test_reads_what_torch_wrote(name, fmt):
    """Views with offsets and strides, a shared storage, a Parameter, every dtype, an empty tensor,
    a 0-d tensor and the module metadata: the arrays torch saved, bit for bit."""
    assert detect_format(PTH / name) == fmt
    got = load_state_dict(PTH / name)
    expected = np.load(PTH / "small_expected.npz")
    assert list(got) == list(expected.files)
    for key in expected.files:
        assert got[key].dtype == expected[key].dtype, key
        assert got[key].shape == expected[key].shape, key
        assert np.array_equal(got[key], expected[key]), key
        assert got[key].flags.c_contiguous and got[key].flags.writeable, key
    assert got.metadata == {"": {"version": 1}, "fpn": {"version": 2}}


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_round_trip(tmp_path, fmt):
    rng = np.random.default_rng(0)
    state = collections.OrderedDict(
        w=rng.standard_normal((4, 3, 2, 2)).astype(np.float32), b=np.arange(5, dtype=np.int64),
        t=np.asfortranarray(rng.standard_normal((3, 5))).astype(np.float64), e=np.zeros((0, 7), np.float32),
        h=np.float16([1.5, -2]), flag=np.array([True, False]))
    path = save_state_dict(tmp_path / "x.pth", state, fmt, metadata={"rpn.head": {"version": 2}})
    assert detect_format(path) == fmt
    back = load_state_dict(path)
    assert list(back) == list(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k
    assert back.metadata == {"rpn.head": {"version": 2}}


def test_the_writer_matches_torchs_byte_layout_where_it_matters(tmp_path):
    """The zip's top folder is the file's stem (as torch names it), with data.pkl, byteorder,
    version and data/<key> records aligned on 64 bytes."""
    path = save_state_dict(tmp_path / "model.pth", {"a": np.arange(3, dtype=np.float32)}, "zip")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert {"model/data.pkl", "model/byteorder", "model/version", "model/data/0"} <= set(names)
        info = zf.getinfo("model/data/0")
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
    assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0


# ----------------------------------------------------------------------------------------------------
# Malicious files: refused by name, and nothing runs
# ----------------------------------------------------------------------------------------------------

def _global(module, name, proto4):
    if proto4:        # STACK_GLOBAL: two strings pushed, then the opcode (what protocol 4 writes)
        m, n = module.encode(), name.encode()
        return b"\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(n)]) + n + b"\x93"
    return b"c" + f"{module}\n{name}\n".encode()


def _evil_pickle(module, name, arg, proto4=False):
    """``OrderedDict({"key": module.name(arg)})``: the REDUCE would call ``module.name(arg)``."""
    a = arg.encode()
    return (b"\x80" + (b"\x04" if proto4 else b"\x02") + _global("collections", "OrderedDict", proto4)
            + b")R(" + b"X\x03\x00\x00\x00key" + _global(module, name, proto4)
            + b"X" + struct.pack("<I", len(a)) + a + b"\x85Ru.")


def _zip_container(path, pkl):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
    return path


def _legacy_container(path, pkl):
    head = b"".join(pickle.dumps(v, protocol=2) for v in (
        LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                             "type_sizes": {"short": 2, "int": 4, "long": 4}}))
    path.write_bytes(head + pkl + pickle.dumps([], protocol=2))
    return path


PAYLOADS = [  # (module, name, argument builder given the marker path)
    ("os", "system", lambda m: f"touch {m}"),
    ("posix", "system", lambda m: f"touch {m}"),
    ("builtins", "eval", lambda m: f"open({str(m)!r}, 'w').close()"),
    ("builtins", "exec", lambda m: f"open({str(m)!r}, 'w').close()"),
    ("subprocess", "getoutput", lambda m: f"touch {m}"),
]


@pytest.mark.parametrize("module, name, arg", PAYLOADS, ids=[f"{m}.{n}" for m, n, _ in PAYLOADS])
@pytest.mark.parametrize("proto4", [False, True], ids=["GLOBAL", "STACK_GLOBAL"])
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_a_malicious_file_is_refused_and_runs_nothing(tmp_path, module, name, arg, proto4, container):
    marker = tmp_path / "marker"
    pkl = _evil_pickle(module, name, arg(marker), proto4)
    # the payload is real: plain pickle runs it (in a child process, as torch.load(weights_only=False)
    # would in the user's)
    subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
                   input=pkl, check=False, capture_output=True)
    assert marker.exists(), "the test's payload does not work; it proves nothing"
    marker.unlink()
    path = (_zip_container if container == "zip" else _legacy_container)(tmp_path / "evil.pth", pkl)
    with pytest.raises(WeightFileError, match=rf"refused to load: the pickle names the global {module}\.{name}"):
        load_state_dict(path)
    assert not marker.exists()


def test_the_unpickler_refuses_even_without_the_scan(tmp_path, monkeypatch):
    """Defence in depth: with the opcode scan switched off, find_class still refuses the global."""
    import mrcnn_np.pth as pth_module
    marker = tmp_path / "marker"
    monkeypatch.setattr(pth_module, "_scan", lambda data, path: None)
    path = _zip_container(tmp_path / "evil.pth", _evil_pickle("os", "system", f"touch {marker}"))
    with pytest.raises(WeightFileError, match=r"os\.system"):
        load_state_dict(path)
    assert not marker.exists()


def test_import_weights_cli_refuses_a_malicious_file(tmp_path, capsys):
    from mrcnn_np.cli import main
    marker = tmp_path / "marker"
    path = _legacy_container(tmp_path / "evil.pth", _evil_pickle("os", "system", f"touch {marker}"))
    out = tmp_path / "r50.npz"
    assert main(["import-weights", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "os.system" in err[0] and str(path) in err[0]
    assert not out.exists() and not marker.exists()
    assert not list(tmp_path.glob(".r50.npz*"))                  # no temporary file left either


# ----------------------------------------------------------------------------------------------------
# Damaged and inconsistent files: one clear error each
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["small_legacy.pth", "small_zip.pth"])
@pytest.mark.parametrize("fraction", [0.02, 0.3, 0.6, 0.97])
def test_truncated_files_are_refused(tmp_path, name, fraction):
    raw = (PTH / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(raw[: int(len(raw) * fraction)])
    with pytest.raises(WeightFileError, match=str(path)):
        load_state_dict(path)


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(b"GIF89a not a pickle at all")
    with pytest.raises(WeightFileError, match="not a PyTorch file"):
        load_state_dict(path)
    with pytest.raises(WeightFileError, match="no such file"):
        load_state_dict(tmp_path / "missing.pth")


def _tensor_pickle(size, stride, offset, numel, key="0"):
    """A one-tensor state dict whose storage holds ``numel`` floats, viewed with size/stride/offset."""
    from mrcnn_np.pth import _Emitter
    e = _Emitter()
    e.empty_ordered_dict()
    e.op(b"(")
    e.str_("w")
    e.global_("torch._utils", "_rebuild_tensor_v2")
    e.op(b"((")
    e.str_("storage")
    e.global_("torch", "FloatStorage")
    e.str_(key)
    e.str_("cpu")
    e.int_(numel)
    e.op(b"tQ")
    e.int_(offset)
    e.tuple_(list(size), e.int_)
    e.tuple_(list(stride), e.int_)
    e.op(b"\x89")
    e.empty_ordered_dict()
    e.op(b"tRu")
    return e.stop()


def _zip_with_storage(path, pkl, nbytes):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/data/0", b"\0" * nbytes)
    return path


def test_a_view_past_its_storage_is_refused(tmp_path):
    ok = _zip_with_storage(tmp_path / "ok.pth", _tensor_pickle((2, 3), (3, 1), 0, 6), 24)
    assert load_state_dict(ok)["w"].shape == (2, 3)
    bad = _zip_with_storage(tmp_path / "bad.pth", _tensor_pickle((2, 3), (3, 1), 1, 6), 24)
    with pytest.raises(WeightFileError, match=r"w: size \(2, 3\) stride \(3, 1\) offset 1 reaches element 6"):
        load_state_dict(bad)


def test_a_storage_shorter_than_its_element_count_is_refused(tmp_path):
    path = _zip_with_storage(tmp_path / "short.pth", _tensor_pickle((6,), (1,), 0, 6), 20)
    with pytest.raises(WeightFileError, match=r"storage '0' holds 20 bytes, its 6 elements need 24"):
        load_state_dict(path)


def test_a_storage_missing_from_the_archive_is_refused(tmp_path):
    path = tmp_path / "nodata.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _tensor_pickle((2,), (1,), 0, 2, key="7"))
    with pytest.raises(WeightFileError, match="storage '7' is not in the file"):
        load_state_dict(path)


def test_a_build_on_a_tensor_is_refused(tmp_path):
    pkl = _tensor_pickle((2,), (1,), 0, 2)
    # insert "}b" (EMPTY_DICT, BUILD) right after the tensor's REDUCE: BUILD on the tensor
    pkl = pkl.replace(b"tRu.", b"tR}bu.")
    path = _zip_with_storage(tmp_path / "build.pth", pkl, 8)
    with pytest.raises(WeightFileError, match="BUILD on a tensor"):
        load_state_dict(path)


def test_a_pickle_of_something_else_is_refused(tmp_path):
    path = _zip_container(tmp_path / "list.pth", pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(WeightFileError, match="holds a list, not a state_dict"):
        load_state_dict(path)
