"""Shared test fixtures: convae imported first, and the real MNIST files.

The MNIST files are read from ``$CONVAE_TEST_MNIST`` or ``../shared/data/mnist``
beside the repository; they are never copied into the project. Theano's own
compile cache (``~/.theano``) is shared by every test and test subprocess.
"""
import contextlib
import errno
import os
import subprocess
import sys
import time

import pytest

import convae

# Theano's defaults before anything imports Theano; the fast path on, as the
# commands have it (CONVAE_FAST=0 turns it off here too).
convae.runtime.enable()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_DIR = os.environ.get("CONVAE_TEST_MNIST",
                           os.path.join(REPO, "..", "shared", "data", "mnist"))


@pytest.fixture(scope="session")
def mnist_dir():
    """Directory with the four real MNIST IDX files."""
    if not os.path.isdir(MNIST_DIR):
        if os.environ.get("CI"):
            pytest.fail("real MNIST files not found at " + MNIST_DIR)
        pytest.skip("real MNIST files not found at " + MNIST_DIR)
    return MNIST_DIR


@pytest.fixture
def aged():
    """A function that makes a file look untouched for twice the time after
    which convae takes an unheld temporary file for abandoned."""
    from convae import files

    def age(path, seconds=2 * files.ABANDONED_AFTER_S):
        then = time.time() - seconds
        os.utime(path, (then, then))
    return age


@pytest.fixture
def busy_cpus():
    """A context manager: within it, a busy program runs on every CPU this
    process may use (about half of each is then this process's), half a
    second in already."""
    @contextlib.contextmanager
    def busy():
        burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                   for _ in os.sched_getaffinity(0)]
        try:
            time.sleep(0.5)
            yield
        finally:
            for burner in burners:
                burner.kill()
                burner.wait()
    return busy


@pytest.fixture
def no_locks(monkeypatch):
    """flock fails as on a file system without locks (some NFS mounts: ENOLCK)."""
    from convae import files

    def flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(files.fcntl, "flock", flock)
