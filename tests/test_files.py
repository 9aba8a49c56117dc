"""Atomic writes: a failed write leaves the old file (and no directory it made), a good
one has normal permissions."""
import os
import stat

import pytest

from convae.files import make_directories, remove_empty, write_atomically


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


def test_missing_directories_are_made_and_removed_again_if_the_write_fails(tmp_path):
    path = tmp_path / "runs" / "a" / "model.npz"
    write_atomically(str(path), lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new"

    def fail(f):
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        write_atomically(str(tmp_path / "runs" / "b" / "c" / "model.npz"), fail)
    # b and c were made for the file and are gone; runs, which holds a, stays.
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["a"]


def test_remove_empty_stops_at_a_directory_that_is_not_empty(tmp_path):
    made = make_directories(str(tmp_path / "x" / "y" / "z"))
    assert made == [str(tmp_path / "x" / "y" / "z"), str(tmp_path / "x" / "y"),
                    str(tmp_path / "x")]
    assert make_directories(str(tmp_path / "x" / "y")) == []  # there already
    (tmp_path / "x" / "kept.txt").write_text("the user's")
    remove_empty(made)
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["kept.txt"]
