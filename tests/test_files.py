"""Atomic writes: a failed write leaves the old file, a good one has normal permissions."""
import os
import stat

import pytest

from convae.files import write_atomically


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(b"old")

    def fail(f):
        f.write(b"half of the new cont")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(str(path), fail)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.npz"]


def test_written_file_has_the_permissions_open_would_give(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomically(str(tmp_path / "a.png"), lambda f: f.write(b"png"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.png").read_bytes() == b"png"
    assert stat.S_IMODE(os.stat(tmp_path / "a.png").st_mode) == 0o644
