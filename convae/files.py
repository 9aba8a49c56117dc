"""Files convae writes and reads: atomic writes, Lasagne-style parameter files, shipped weights.

A parameter file is what Lasagne's examples save: ``np.savez(path, *values)``
with ``values = lasagne.layers.get_all_param_values(network)``, read back with
``np.load`` into ``arr_0 .. arr_n``.

Every file is written to a temporary name beside it (``.convae-tmp-*``) and renamed
into place, so a reader sees the old content or the new, never half of it;
files that belong together are all written before any is renamed. A writer
holds a lock on its temporary file; one that no process holds, and none has
written to for a minute, was left by a writer killed mid-write (SIGKILL, a
power cut), and the next write in its directory removes it.
"""
import errno
import fcntl
import glob
import io
import os
import tempfile
import time

import numpy as np

import lasagne

LINK_LOOP = "a loop of symbolic links"  # what dead_link calls one

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
# The shipped runs (see the README): parameters of the default recipe, its
# per-epoch metrics, and parameters of a denoising run.
SHIPPED_WEIGHTS = os.path.join(WEIGHTS_DIR, "mnist.npz")
SHIPPED_METRICS = os.path.join(WEIGHTS_DIR, "mnist_metrics.jsonl")
SHIPPED_DENOISING_WEIGHTS = os.path.join(WEIGHTS_DIR, "mnist_denoising.npz")

# The files convae-train writes into its run directory: the parameters, the
# full training state, one JSON line per epoch, the final test MSE.
MODEL_FILE = "model.npz"
CHECKPOINT_FILE = "checkpoint.npz"
METRICS_FILE = "metrics.jsonl"
TEST_FILE = "test.json"

# Only convae names files so: what it removes as abandoned is its own.
TEMPORARY_PREFIX = ".convae-tmp-"
# A temporary file that no process holds, and none has written to for this
# long, was left by a writer killed mid-write. (A writer takes its lock a few
# microseconds after making the file: a fresh file may not be held yet.)
ABANDONED_AFTER_S = 60
# How every .npz (a zip file) begins.
ZIP_MAGIC = b"PK\x03\x04"


class ParameterFileError(Exception):
    """A parameter file is missing, unreadable or for another network (one line)."""


class NpzFileError(ValueError):
    """An .npz file cannot be read; the message is one line naming it."""


def plain_file_mode():
    """The permissions ``open`` gives a new file: 0666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_files_atomically(writers):
    """Write several files so that none is replaced unless all were written.

    writers: (path, write, mode) triples; ``write(f)`` fills a temporary file
    beside ``path`` opened with ``mode`` ('wb' or 'w'). Only once every
    temporary file is written and flushed to disk are they renamed into place,
    in the given order (a symbolic link is kept: the file it leads to is
    replaced). Missing directories are made. On any error the
    temporary files and the directories made are removed, the old files stay
    as they were, and an OSError naming the file is raised. The files get
    plain permissions (0666 less the umask), not mkstemp's 0600.
    """
    mode_bits = plain_file_mode()
    pending, made, held = [], [], []
    done = False
    try:
        for path, write, mode in writers:
            target = os.path.realpath(path)  # a link is written through, as the shell's > does
            directory = os.path.dirname(target)
            made += make_directories(directory)
            if directory not in [os.path.dirname(earlier) for _, earlier in pending]:
                remove_temporaries(directory)  # once a directory, not once a file
            try:  # an error names the file asked for, not the temporary one
                fd, tmp, lock_fd = temporary_file(directory, TEMPORARY_PREFIX)
                pending.append((tmp, target))
                held.append(lock_fd)
                os.chmod(tmp, mode_bits)
                with os.fdopen(fd, mode) as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                message = "cannot write {}: {}".format(path, e.strerror or e)
                raise (OSError(e.errno, message) if e.errno else OSError(message)) from e
        for tmp, target in pending:
            os.replace(tmp, target)
        done = True
    finally:
        for tmp, _ in pending:
            if os.path.exists(tmp):
                os.remove(tmp)
        for lock_fd in held:
            os.close(lock_fd)
        if not done:
            remove_empty(made)


def missing_directories(directory):
    """``directory`` and those above it that do not exist (absolute paths,
    deepest first; none if it exists): what making it would make."""
    missing = []
    path = os.path.abspath(directory)
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def dead_link(path):
    """How the symbolic link ``path`` leads to no file, for a message ('a
    symbolic link to TARGET, which does not exist', or 'a loop of symbolic
    links'); None where ``path`` is no link or leads to a file."""
    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return LINK_LOOP
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return "a symbolic link to {}, which does not exist".format(os.readlink(path))
    return None


def make_directories(directory):
    """Make ``directory`` and any missing above it; returns those it made,
    deepest first (none if it existed). OSError if one cannot be made."""
    missing = missing_directories(directory)
    os.makedirs(directory, exist_ok=True)
    return missing


def remove_empty(directories):
    """Remove each of ``directories`` (deepest first, as make_directories
    gives them) while it is empty: what a failed command made and left so."""
    for directory in directories:
        try:
            os.rmdir(directory)
        except OSError:
            return


def write_atomically(path, write, mode="wb"):
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it into place."""
    write_files_atomically([(path, write, mode)])


def lock(path):
    """An open descriptor holding an exclusive ``flock`` on the directory or
    file ``path``.

    Close it to release the lock; a process that dies releases it too, so a
    killed run leaves no stale lock behind (and no lock file: the path itself
    is locked). BlockingIOError if another process holds it.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def temporary_file(directory, prefix, suffix=""):
    """A new file in ``directory`` for a write that renames it into place:
    (fd, path, held), ``held`` a descriptor holding the lock that says a
    writer is at work on it (where the file system has locks: on one
    without, some NFS mounts, the age rule alone guards it). Close both
    when done."""
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    try:
        try:
            held = lock(path)
        except OSError:  # no locks here (ENOLCK): writing must still work
            held = os.open(path, os.O_RDONLY)
    except OSError:
        os.close(fd)
        os.remove(path)
        raise
    return fd, path, held


def remove_abandoned(pattern, idle_s=ABANDONED_AFTER_S):
    """Delete the files matching the glob ``pattern`` that writers killed
    mid-write left: those that no process holds (see ``temporary_file``) and
    none has written to for ``idle_s`` seconds."""
    now = time.time()
    for path in glob.glob(pattern):
        try:
            if now - os.stat(path).st_mtime < idle_s:
                continue
            held = lock(path)
        except OSError:  # a writer at work (BlockingIOError), or done since the glob
            continue
        try:
            os.remove(path)
        except OSError:  # gone since, or not this user's to remove (a sticky /tmp)
            pass
        finally:
            os.close(held)


def remove_temporaries(directory, idle_s=ABANDONED_AFTER_S):
    """``remove_abandoned`` for the temporary files of atomic writes in ``directory``."""
    remove_abandoned(glob.escape(os.path.join(directory, TEMPORARY_PREFIX)) + "*", idle_s)


def npz_bytes(arrays):
    """The bytes of an .npz file holding a dict of arrays (built in memory, so
    that a failing disk write leaves no half-closed zip file behind)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_npz(path):
    """All arrays of the .npz file ``path``, as a dict; NpzFileError if it cannot be read."""
    try:
        with open(path, "rb") as f:
            if f.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
                raise NpzFileError("{}: not an .npz file".format(path))
            f.seek(0)
            with np.load(f) as npz:
                return {key: npz[key] for key in npz.files}
    except NpzFileError:
        raise
    except OSError as e:
        raise NpzFileError("{}: cannot be read ({})".format(path, e.strerror or e))
    except Exception as e:  # a truncated or corrupt zip fails in many ways
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise NpzFileError("{}: not a readable .npz file ({})".format(path, reason))


def param_values(network):
    """The network's parameter values as the ``arr_0 .. arr_n`` of a parameter file."""
    values = lasagne.layers.get_all_param_values(network)
    return {"arr_%d" % i: v for i, v in enumerate(values)}


def in_run(path, name):
    """``path``, or the file ``name`` in it if it is a run directory; a leading ``~``
    expanded, as the commands' flags have it (Python leaves it, unlike a shell).
    ValueError for an empty path, which names no file."""
    if not path:
        raise ValueError("an empty path names no file: give a {} or its run "
                         "directory".format(name))
    path = os.path.expanduser(path)
    return os.path.join(path, name) if os.path.isdir(path) else path


def parameter_file(path):
    """``path``, or the MODEL_FILE in it if it is a run directory (see ``in_run``)."""
    return in_run(path, MODEL_FILE)


def load_params(path, network):
    """Load ``arr_0 .. arr_n`` from ``path`` (a parameter file, or a run
    directory holding one) into ``network``.

    Raises ParameterFileError if the file is missing, unreadable or holds
    parameters of another architecture, or values that are not finite
    floating-point numbers; float64 values are rounded to a float32 network.
    """
    path = parameter_file(path)
    try:
        saved = read_npz(path)
        values = [saved["arr_%d" % i] for i in range(len(saved))]
    except NpzFileError as e:
        raise ParameterFileError(str(e))
    except KeyError as e:
        if {"settings", "shared_0"} <= set(saved):  # see convae.checkpoint
            raise ParameterFileError("{}: a convae-train checkpoint, not a parameter "
                                     "file: give the model.npz beside it, or the run "
                                     "directory".format(path))
        raise ParameterFileError("{}: not a parameter file (no {})".format(path, e))
    params = lasagne.layers.get_all_params(network)
    shapes = [p.get_value().shape for p in params]
    if [v.shape for v in values] != shapes:
        raise ParameterFileError(
            "{}: parameters of another architecture ({} arrays, expected {} "
            "shaped {})".format(path, len(values), len(shapes), shapes))
    for i, value in enumerate(values):
        if value.dtype.kind != "f":
            raise ParameterFileError("{}: arr_{} holds {} values, not floating point".format(
                path, i, value.dtype))
        if not np.isfinite(value).all():
            raise ParameterFileError("{}: arr_{} holds NaN or infinite values".format(path, i))
    # A run under THEANO_FLAGS=floatX=float64 saves float64: round to this network's type.
    lasagne.layers.set_all_param_values(
        network, [value.astype(p.dtype, copy=False) for value, p in zip(values, params)])
