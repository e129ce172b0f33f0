"""Atomic writes: a failed write leaves the old file and no temporary; new files get normal modes."""
import os

import pytest

from mrcnn_np.atomic import atomic_write_bytes, atomic_write_json


def test_new_file_gets_umask_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
    finally:
        os.umask(mask)
    # the module reads the umask at import; whatever it was, owner-only 0o600 is the mkstemp bug
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o666 & ~mask


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "a str, not bytes")       # fails after the temporary file exists
    assert path.read_text() == '{"ok": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
