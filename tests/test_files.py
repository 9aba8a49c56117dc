"""Atomic writes: a failed write leaves the old file (and no directory it made), a good
one has normal permissions; parameter files hold finite floating-point values."""
import os
import signal
import stat
import subprocess
import sys

import lasagne
import numpy as np
import pytest

from convae import files
from convae.files import (SHIPPED_WEIGHTS, ParameterFileError, load_params, make_directories,
                          remove_empty, write_atomically)
from convae.model import build_convolutional_autoencoder


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


def shipped_values():
    with np.load(SHIPPED_WEIGHTS) as f:
        return [f["arr_%d" % i] for i in range(len(f.files))]


def test_float64_parameters_are_rounded_into_the_float32_network(tmp_path):
    """A run under THEANO_FLAGS=floatX=float64 saves float64 arrays."""
    values = [v.astype(np.float64) + 1e-9 for v in shipped_values()]
    np.savez(tmp_path / "model.npz", *values)
    network = build_convolutional_autoencoder()
    load_params(str(tmp_path), network)
    loaded = lasagne.layers.get_all_param_values(network)
    assert [v.dtype for v in loaded] == [np.float32] * len(values)
    for got, saved in zip(loaded, values):
        np.testing.assert_array_equal(got, saved.astype(np.float32))


@pytest.mark.parametrize("spoil,message", [
    (lambda v: v.astype(np.int32), "arr_1 holds int32 values, not floating point"),
    (lambda v: np.where(np.arange(v.size) == 7, np.nan, v).astype(v.dtype),
     "arr_1 holds NaN or infinite values"),
    (lambda v: np.full_like(v, np.inf), "arr_1 holds NaN or infinite values"),
])
def test_parameters_that_are_not_finite_floats_are_refused(tmp_path, spoil, message):
    values = shipped_values()
    values[1] = spoil(values[1])
    np.savez(tmp_path / "bad.npz", *values)
    network = build_convolutional_autoencoder()
    before = lasagne.layers.get_all_param_values(network)
    with pytest.raises(ParameterFileError, match="bad.npz: " + message):
        load_params(str(tmp_path / "bad.npz"), network)
    for kept, was in zip(lasagne.layers.get_all_param_values(network), before):
        np.testing.assert_array_equal(kept, was)


def test_a_link_is_written_through_and_kept(tmp_path):
    """--out figures/latest.png, a link to the file of the day: the file is
    replaced, the link stays (before, the link became a file of its own)."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "old.png").write_bytes(b"old")
    os.symlink("real/old.png", tmp_path / "latest.png")
    os.symlink("real/new.png", tmp_path / "next.png")  # leads to a file not made yet
    write_atomically(str(tmp_path / "latest.png"), lambda f: f.write(b"new"))
    write_atomically(str(tmp_path / "next.png"), lambda f: f.write(b"next"))
    assert os.readlink(tmp_path / "latest.png") == "real/old.png"
    assert (tmp_path / "real" / "old.png").read_bytes() == b"new"
    assert (tmp_path / "real" / "new.png").read_bytes() == b"next"
    assert sorted(os.listdir(tmp_path)) == ["latest.png", "next.png", "real"]
    assert sorted(os.listdir(tmp_path / "real")) == ["new.png", "old.png"]


def test_a_write_that_cannot_begin_names_the_file_not_its_temporary(tmp_path):
    """A link into /proc, where no file can be made: the error was
    'No such file or directory: /proc/.convae-tmp-r7oj_z8j'."""
    os.symlink("/proc/version", tmp_path / "out.png")
    with pytest.raises(OSError) as error:
        write_atomically(str(tmp_path / "out.png"), lambda f: f.write(b"png"))
    assert error.value.strerror == "cannot write {}: No such file or directory".format(
        tmp_path / "out.png")
    assert os.listdir(tmp_path) == ["out.png"]


def test_a_write_clears_what_a_writer_killed_beside_it_left(tmp_path, aged):
    """A temporary file that no process holds and none has touched for a
    minute was left by a writer killed mid-write: the next write in that
    directory removes it. It keeps one a writer holds, a fresh one (its writer
    takes the lock a few microseconds after making it) and files not convae's."""
    def made(name):
        (tmp_path / name).write_bytes(b"half a file")
        return tmp_path / name
    abandoned, at_work = made(".convae-tmp-k1ll3d"), made(".convae-tmp-busy01")
    not_ours = made(".tmp-someone-else")
    for path in (abandoned, at_work, not_ours):
        aged(path)
    fresh = made(".convae-tmp-new123")
    held = files.lock(str(at_work))
    try:
        write_atomically(str(tmp_path / "figure.png"), lambda f: f.write(b"png"))
    finally:
        os.close(held)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["figure.png", at_work.name, not_ours.name, fresh.name])


WRITER_KILLED_MID_WRITE = """
import sys, time
from convae import files

def write(f):
    f.write(b"half a figure")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)  # killed here

files.write_atomically(sys.argv[1], write)
"""


def test_a_writer_killed_mid_write_leaves_what_the_next_write_clears(tmp_path, aged):
    """For real: SIGKILL in the middle of an atomic write leaves its temporary
    file, held by no one once the process is gone; the next write there
    (here, a minute later, as aged() makes it look) removes it."""
    child = subprocess.Popen([sys.executable, "-c", WRITER_KILLED_MID_WRITE,
                              str(tmp_path / "a.png")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "writing\n"
        [left] = os.listdir(tmp_path)
        assert left.startswith(files.TEMPORARY_PREFIX)
        aged(tmp_path / left)
        write_atomically(str(tmp_path / "b.png"), lambda f: f.write(b"png"))
        assert sorted(os.listdir(tmp_path)) == sorted([left, "b.png"])  # held: at work
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        child.stdout.close()
    write_atomically(str(tmp_path / "b.png"), lambda f: f.write(b"png again"))
    assert os.listdir(tmp_path) == ["b.png"]


def test_a_file_system_without_locks_still_takes_writes(tmp_path, no_locks, aged):
    """Some NFS mounts refuse flock (ENOLCK): a write works all the same, and
    a temporary file whose lock cannot be tried is kept, not taken for
    abandoned."""
    (tmp_path / ".convae-tmp-unknown").write_bytes(b"someone's, or nobody's")
    aged(tmp_path / ".convae-tmp-unknown")
    write_atomically(str(tmp_path / "figure.png"), lambda f: f.write(b"png"))
    assert (tmp_path / "figure.png").read_bytes() == b"png"
    assert sorted(os.listdir(tmp_path)) == [".convae-tmp-unknown", "figure.png"]
