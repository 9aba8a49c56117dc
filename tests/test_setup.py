"""scripts/setup.sh's choice of interpreter, on machines whose only Python is too new.

A real CPython 3.12-only machine and uv's download of a CPython (from outside
PyPI) cannot be had here: stand-ins on PATH play them.
"""
import hashlib
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP = os.path.join(REPO, "scripts", "setup.sh")


def machine(tmp_path, programs):
    """A PATH holding only the given stand-in programs and the tools setup.sh needs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, script in programs.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + script)
        (bin_dir / name).chmod(0o755)
    # The real tools, where no stand-in plays them (linked after the stand-ins
    # are written: writing through a link would overwrite the real program).
    for tool in ("dirname", "rm", "id", "readlink", "cat", "sha256sum", "cut", "mkdir", "ln"):
        if tool not in programs:
            os.symlink(subprocess.check_output(["which", tool], text=True).strip(),
                       bin_dir / tool)
    return str(bin_dir)


def which_python(path):
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(["/bin/bash", SETUP, "--which-python"], env=env,
                          capture_output=True, text=True, timeout=120)


# A CPython 3.12 as Ubuntu 24.04 has it: it fails convae's version check (and
# has no venv module to install uv with).
PYTHON_312 = 'case "$*" in *version_info*) exit 1;; *) echo "python3.12: $*" >&2; exit 1;; esac\n'


def test_a_supported_python_on_path_is_used(tmp_path):
    real = sys.executable  # the tests run on CPython 3.9 to 3.11
    path = machine(tmp_path, {"python3.11": 'exec {} "$@"\n'.format(real)})
    done = which_python(path)
    assert done.returncode == 0 and done.stdout.strip() == os.path.join(path, "python3.11")


def test_only_a_newer_python_and_uv_gets_a_cpython_3_11_from_uv(tmp_path):
    real = sys.executable
    log = tmp_path / "uv.log"
    uv = ('echo "$*" >> {log}\n'
          'case "$*" in "python install 3.11") exit 0;; "python find 3.11") echo {real};;'
          ' *) exit 2;; esac\n').format(log=log, real=real)
    done = which_python(machine(tmp_path, {"python3": PYTHON_312, "uv": uv}))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == real
    assert log.read_text().splitlines() == ["python install 3.11", "python find 3.11"]


def test_only_a_newer_python_and_no_uv_says_the_command_that_would(tmp_path):
    done = which_python(machine(tmp_path, {"python3": PYTHON_312}))
    assert done.returncode == 1 and done.stdout == ""
    message = done.stderr.strip()
    assert message.count("\n") == 0
    assert "needs CPython 3.9 to 3.11" in message
    assert ("sudo apt-get install pipx && pipx install uv && ~/.local/bin/uv python "
            "install 3.11") in message
    assert not os.path.exists(os.path.join(REPO, ".venv-uv"))


def test_a_python_the_user_names_is_used_or_refused_never_passed_over(tmp_path):
    real = sys.executable
    path = machine(tmp_path, {"python3.11": 'exec {} "$@"\n'.format(real),
                              "python3.12": PYTHON_312})
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root")}
    for named, code in [(real, 0), ("python3.12", 1), ("/nonexistent/python", 1)]:
        done = subprocess.run(["/bin/bash", SETUP, "--which-python"],
                              env=dict(env, PYTHON=named), capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == code, done.stderr
        if code == 0:
            assert done.stdout.strip() == real
        else:  # not the python3.11 on PATH in its place
            assert done.stdout == "" and done.stderr.count("\n") == 1
            assert done.stderr.startswith("setup: PYTHON={} is not a CPython 3.9 to 3.11".format(
                named))


def test_an_argument_setup_does_not_take_is_a_usage_error_before_any_work(tmp_path):
    # A mistyped --which-python used to run the whole set-up instead.
    path = machine(tmp_path, {})
    for args in (["--which-pyhton"], ["--which-python", "extra"], ["-h"]):
        done = subprocess.run(["/bin/bash", SETUP] + args,
                              env={"PATH": path, "HOME": os.environ.get("HOME", "/root")},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr == "usage: bash scripts/setup.sh [--which-python]\n"


def run_setup_copy(tmp_path, programs, env=()):
    """Run a copy of setup.sh in tmp_path (its .venv, if any, is tmp_path's) on a
    machine of the given stand-in programs (see ``machine``), with ``env``
    (name, value) pairs added to a PATH and HOME."""
    if not (tmp_path / "scripts").exists():
        (tmp_path / "scripts").mkdir()
        with open(SETUP) as f:
            (tmp_path / "scripts" / "setup.sh").write_text(f.read())
    path = str(tmp_path / "bin") if (tmp_path / "bin").exists() else machine(tmp_path, programs)
    return subprocess.run(["/bin/bash", str(tmp_path / "scripts" / "setup.sh")],
                          env=dict({"PATH": path, "HOME": os.environ.get("HOME", "/root")},
                                   **dict(env)),
                          capture_output=True, text=True, timeout=120)


def test_a_venv_of_another_python_is_refused_before_any_work(tmp_path):
    """A .venv made earlier with Python 3.12 used to reach pip, which failed on numpy."""
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text("#!/bin/bash\n" + PYTHON_312)
    (tmp_path / ".venv" / "bin" / "python").chmod(0o755)
    done = run_setup_copy(tmp_path, {"apt-get": "echo apt-get ran >&2; exit 1\n"})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == ("setup: .venv runs a Python other than CPython 3.9 to 3.11 "
                           "(Theano 1.0.5 needs numpy < 1.24); remove it (rm -rf .venv) "
                           "and run this again\n")
    assert sorted(os.listdir(tmp_path / ".venv")) == ["bin"]


def test_a_venv_whose_python_is_gone_is_made_anew(tmp_path):
    """pyenv's 3.11.6 replaced by 3.11.7 leaves .venv's links leading nowhere:
    setup failed with "Error: [Errno 2] No such file or directory"."""
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    gone = tmp_path / "pyenv" / "3.11.6" / "bin" / "python3.11"
    os.symlink(gone, tmp_path / ".venv" / "bin" / "python3.11")
    os.symlink("python3.11", tmp_path / ".venv" / "bin" / "python")
    python = {"python3.11": 'exec {} "$@"\n'.format(sys.executable)}
    done = run_setup_copy(tmp_path, dict(python, **{"apt-get": "exit 1\n"}))
    assert done.stderr.startswith(
        "setup: .venv's Python is gone (.venv/bin/python leads to {}, which no longer "
        "exists): making .venv anew\n".format(gone))
    assert not os.path.exists(tmp_path / ".venv")  # then stopped at apt-get, for g++
    assert "setup: installing" in done.stderr and done.returncode == 1


def test_a_venv_without_pip_gets_it_before_the_install(tmp_path):
    """A .venv whose making was cut short (Ctrl-C while venv ran ensurepip) has
    no pip: setup failed with "No module named pip"."""
    log = tmp_path / "python.log"
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    python = tmp_path / ".venv" / "bin" / "python"
    python.write_text('#!/bin/bash\necho "$*" >> {}\n'
                      'case "$*" in "-c import pip") exit 1;; "-m ensurepip"|"-m pip "*) exit 0;;'
                      ' *) exec {} "$@";; esac\n'.format(log, sys.executable))
    python.chmod(0o755)
    (tmp_path / "requirements.txt").write_text("numpy\n")
    (tmp_path / "setup.py").write_text("")
    done = run_setup_copy(tmp_path, {"apt-get": "exit 0\n", "g++": "exit 0\n"})
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines()[-4:] == [
        "-c import pip", "-m ensurepip",
        "-m pip install -q --disable-pip-version-check -r requirements.txt",
        "-m pip install -q --disable-pip-version-check --no-deps -e ."]
    assert (tmp_path / ".venv" / ".installed").exists()


def made_venv(repo):
    """A .venv in repo that setup takes as made and installed: a stand-in
    Python (the real one, for setup's questions) and an up-to-date .installed."""
    (repo / ".venv" / "bin").mkdir(parents=True)
    python = repo / ".venv" / "bin" / "python"
    python.write_text('#!/bin/bash\nexec {} "$@"\n'.format(sys.executable))
    python.chmod(0o755)
    (repo / "requirements.txt").write_text("numpy\n")
    (repo / "setup.py").write_text("")
    (repo / ".venv" / ".installed").write_text(hashlib.sha256(b"numpy\n").hexdigest() + "\n")


MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def test_mnist_beside_the_clone_is_linked_into_convae_s_cache(tmp_path, monkeypatch):
    """This project's machines reach no MNIST mirror, and keep MNIST in
    ../shared/data/mnist: the README's first command failed there ("could not
    be downloaded") unless CONVAE_DATA_DIR was set by hand."""
    repo, home = tmp_path / "repo", tmp_path / "home"
    repo.mkdir()
    home.mkdir()
    made_venv(repo)
    shared = tmp_path / "shared" / "data" / "mnist"
    shared.mkdir(parents=True)
    for name in MNIST_FILES:
        (shared / name).write_bytes(name.encode())
    stand_ins = {"apt-get": "exit 0\n", "g++": "exit 0\n"}
    cache = home / "cache" / "convae" / "mnist"
    (cache).mkdir(parents=True)
    (cache / MNIST_FILES[0][:-3]).write_bytes(b"downloaded")  # kept, in either form
    done = run_setup_copy(repo, stand_ins, [("HOME", str(home)),
                                            ("XDG_CACHE_HOME", str(home / "cache"))])
    assert done.returncode == 0, done.stderr
    assert done.stderr.endswith("setup: MNIST from ../shared/data/mnist linked into {} "
                                "(3 files)\n".format(cache))
    assert sorted(os.listdir(cache)) == sorted([MNIST_FILES[0][:-3]] + list(MNIST_FILES[1:]))
    for name in MNIST_FILES[1:]:
        assert os.readlink(cache / name) == str(shared / name)
    assert (cache / MNIST_FILES[0][:-3]).read_bytes() == b"downloaded"
    # ... the very directory convae reads when given no --data-dir or CONVAE_DATA_DIR.
    from convae import data
    monkeypatch.delenv("CONVAE_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    assert data.default_data_dir("mnist") == str(cache)
    monkeypatch.setenv("XDG_CACHE_HOME", "rel")
    assert data.default_data_dir("mnist") == str(home / ".cache" / "convae" / "mnist")
    again = run_setup_copy(repo, stand_ins, [("HOME", str(home)),
                                             ("XDG_CACHE_HOME", str(home / "cache"))])
    assert again.returncode == 0 and "MNIST" not in again.stderr
    # A relative XDG_CACHE_HOME is ignored, as the XDG spec says: ~/.cache.
    done = run_setup_copy(repo, stand_ins, [("HOME", str(home)), ("XDG_CACHE_HOME", "rel")])
    assert sorted(os.listdir(home / ".cache" / "convae" / "mnist")) == sorted(MNIST_FILES)
    # A cache that cannot be made (a home that is a file: no permission bit
    # stops root) leaves the links out, not setup failed at its very end.
    (tmp_path / "not-a-home").write_text("")
    done = run_setup_copy(repo, stand_ins, [("HOME", str(tmp_path / "not-a-home"))])
    assert done.returncode == 0 and "MNIST" not in done.stderr, done.stderr


def apt_installs(tmp_path, programs):
    """What setup asks apt-get to install on a machine of ``programs`` (an
    apt-get that logs and then stops setup at the install, before any venv)."""
    log = tmp_path / "apt.log"
    apt = 'echo "$*" >> {}\ncase "$1" in update) exit 0;; *) exit 1;; esac\n'.format(log)
    done = run_setup_copy(tmp_path, dict(programs, **{"apt-get": apt}))
    assert done.returncode == 1, done.stderr
    assert not os.path.exists(tmp_path / ".venv")
    update, install = log.read_text().splitlines()
    assert update == "update -qq" and install.startswith("install -y -qq ")
    return install.split()[3:]


def test_a_machine_without_g_plus_plus_gets_it_from_apt(tmp_path):
    """Theano compiles every op with g++; setup used to leave a machine without it."""
    python = {"python3.11": 'exec {} "$@"\n'.format(sys.executable)}
    assert "g++" in apt_installs(tmp_path, python)  # no g++ on this PATH


def test_a_debian_python_without_headers_or_venv_gets_them_from_apt(tmp_path):
    """Debian's python3.X comes without Python.h, which Theano compiles every op
    against, and without venv: python3.X-dev and -venv are installed with the rest."""
    missing = [version for version in ("3.9", "3.10", "3.11")
               if not os.path.exists("/usr/include/python{}/Python.h".format(version))]
    if not missing:
        pytest.skip("this machine has the headers of every Debian python3.9-3.11")
    # ... and without venv's ensurepip (python3.X-venv), so no .venv could be made.
    debian_python = ('case "$*" in *sysconfig*) echo /usr/include/python{};;'
                     ' *ensurepip*) exit 1;; *) exec {} "$@";; esac\n'.format(
                         missing[0], sys.executable))
    installs = apt_installs(tmp_path, {"python3.11": debian_python})
    assert {"python{}-dev".format(missing[0]), "python{}-venv".format(missing[0])} <= set(
        installs)


def test_a_python_without_headers_setup_cannot_install_is_one_line(tmp_path):
    bare = ('case "$*" in *sysconfig*) echo /opt/bare/include;;'
            ' *) exec {} "$@";; esac\n'.format(sys.executable))
    done = run_setup_copy(tmp_path, {"python3.11": bare, "apt-get": "exit 1\n"})
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == ("setup: {}/bin/python3.11 has no C headers "
                           "(/opt/bare/include/Python.h), which Theano compiles every op "
                           "against; install them, or set PYTHON to a CPython 3.9 to 3.11 "
                           "that has them\n".format(tmp_path))
    assert not os.path.exists(tmp_path / ".venv")


def test_packages_to_install_without_root_or_sudo_is_one_line(tmp_path):
    """A user's account on a machine without sudo: say what to install, not
    'sudo: command not found'."""
    done = run_setup_copy(tmp_path, {"python3.11": 'exec {} "$@"\n'.format(sys.executable),
                                     "id": "echo 1000\n", "apt-get": "exit 1\n"})
    assert (done.returncode, done.stdout) == (1, "")
    said = re.fullmatch(r"setup: installing (.+) takes root, and there is no sudo: run this "
                        r"as root, or have them installed \(apt-get install (.+)\)\n",
                        done.stderr)
    assert said and said.group(1) == said.group(2), done.stderr
    assert "g++" in said.group(1).split()  # none on this PATH
