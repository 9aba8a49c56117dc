"""What convae's commands share: flags, path checks, and the one-line error."""
import argparse
import contextlib
import errno
import math
import numbers
import os
import signal
import sys
import tempfile
import threading
import traceback

from convae import checkpoint, data
from convae.files import (CHECKPOINT_FILE, LINK_LOOP, SHIPPED_WEIGHTS, TEMPORARY_PREFIX,
                          ParameterFileError, dead_link, missing_directories, parameter_file)

# The errors of a disk that is full, or full for this user.
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)
# The figures' directory: the shipped run's in the repository, a run's own in its directory.
FIGURES_DIR = "figures"
# NumPy's RandomState takes seeds from 0 to 2**32 - 1.
MAX_SEED = 2 ** 32 - 1
# checkpoint.npz holds the epochs a run was told to train as an int64: more
# made a checkpoint that no --resume could read.
MAX_EPOCHS = 2 ** 63 - 1
# What an error writing a command's report lines names.
STDOUT = "standard output"


class PathError(ValueError):
    """A path given on the command line cannot be used; the message is one line."""


# What the commands report as a one-line error rather than a traceback.
USER_ERRORS = (ValueError, data.DataError, ParameterFileError, OSError, MemoryError)


def plain_number(text, convert):
    """``convert(text)`` (int or float) for a number as one is typed in a
    shell; ValueError for what Python reads beyond that, digit separators
    (``1_0`` is 10) and other scripts' digits (``٣`` is 3), more likely a
    slip than a number."""
    if "_" in text or not text.isascii():
        raise ValueError("not a plain number: {!r}".format(text))
    return convert(text)


class Number:
    """A kind of number a flag or a setting takes: called with a flag's text,
    the argparse type; ``accepts(value)`` the test of a value given in Python
    (a notebook's ``train.Settings``), so that both take the same numbers."""

    def __init__(self, convert, acceptable, wanted):
        """convert: int or float; acceptable(value) -> bool; wanted: what the
        errors say is wanted, "a positive integer"."""
        self.convert, self.acceptable, self.wanted = convert, acceptable, wanted

    def __call__(self, text):
        """argparse type: the number ``text`` is, if acceptable."""
        try:
            value = plain_number(text, self.convert)
        except ValueError:
            value = None
        if value is None or not self.acceptable(value):
            raise argparse.ArgumentTypeError("must be {}, got {!r}".format(self.wanted, text))
        return value

    def accepts(self, value):
        """Whether a Python value is such a number: a float kind takes any real
        number, an int kind whole ones (not True, not 3.0, not "3")."""
        kind = numbers.Integral if self.convert is int else numbers.Real
        return (isinstance(value, kind) and not isinstance(value, bool)
                and bool(self.acceptable(value)))


positive_int = Number(int, lambda v: v >= 1, "a positive integer")
whole_number = Number(int, lambda v: True, "a whole number")
positive_float = Number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
fraction = Number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
seed = Number(int, lambda v: 0 <= v <= MAX_SEED, "an integer from 0 to {}".format(MAX_SEED))
epochs = Number(int, lambda v: 1 <= v <= MAX_EPOCHS,
                "a positive integer of at most {}".format(MAX_EPOCHS))


def nonempty_path(text):
    """argparse type: a file or directory name, not empty (an empty name
    silently meant a default or the current directory, or failed naming
    nothing), not ``-`` and not two names on two lines, with a leading ``~``
    expanded: the shell leaves it in ``--out=~/runs/x``, which made a
    directory named ``~`` here."""
    if not text:
        raise argparse.ArgumentTypeError("must name a file or directory, got ''")
    if text == "-":  # to many tools standard input or output; here it made a file named "-"
        raise argparse.ArgumentTypeError("'-' (standard input or output) is not taken: give "
                                         "a file or directory name (./- for one named -)")
    if "\n" in text:  # "$(ls runs/*/model.npz)" of two runs: the error named the first alone
        raise argparse.ArgumentTypeError("{!r} holds a line break: give one file or directory "
                                         "name".format(text))
    return os.path.expanduser(text)


def weights_argument(parser):
    """Add --weights: a model.npz, its run directory, or (default) the shipped weights."""
    parser.add_argument("--weights", type=nonempty_path,
                        help="model.npz from convae-train, or its run directory "
                        "(default: the weights shipped with convae)")


def common_arguments(parser):
    """Add the flags shared by the figure commands: weights and data."""
    weights_argument(parser)
    parser.add_argument("--data-dir", type=nonempty_path, help="directory with the IDX files "
                        "(default: as convae-train)")
    parser.add_argument("--dataset", choices=sorted(data.DATASETS),
                        help="default: the one the --weights run trained on (its "
                        "checkpoint says), else mnist")


def weights_path(path):
    """The model.npz for --weights: the shipped one for None, the file itself, or DIR/model.npz."""
    if path is None:
        return SHIPPED_WEIGHTS
    path = parameter_file(path)
    if not os.path.isfile(path):
        raise ValueError("no weights at {}".format(path))
    return path


def shipped(weights):
    """True if --weights ``weights`` (None included) are the weights shipped with convae."""
    return os.path.abspath(weights_path(weights)) == SHIPPED_WEIGHTS


def figures_dir(weights):
    """Where the figure commands write by default: ``figures`` (the
    repository's, the README's figures) for the shipped weights, else the
    ``figures`` directory beside the model.npz of --weights, so that a run's
    figures stay with it and the shipped ones stay as they are."""
    return FIGURES_DIR if shipped(weights) else run_file(weights, FIGURES_DIR)


def run_file(weights, name):
    """The file ``name`` (metrics.jsonl, checkpoint.npz) of the run behind
    ``weights`` (a --weights): the one beside its model.npz."""
    return os.path.join(os.path.dirname(weights_path(weights)), name)


def run_settings(weights, remedy):
    """The settings (a dict) of the run behind ``weights`` (a --weights), from
    the checkpoint beside its model.npz; {} for the shipped weights or where
    there is none. PathError, ending in ``remedy``, if it cannot be read."""
    path = None if weights is None else run_file(weights, CHECKPOINT_FILE)
    if path is None or not os.path.isfile(path):
        return {}
    try:
        return checkpoint.settings_of(path)
    except checkpoint.CheckpointError as e:
        raise PathError("{}; {}".format(e, remedy))


def trained_on(settings):
    """The dataset a run trained on, from its settings (``run_settings``):
    'mnist' where they say none."""
    return settings.get("dataset", "mnist")


def dataset_to_show(dataset, weights):
    """--dataset if given, else the one the run behind ``weights`` (a --weights)
    trained on, from the checkpoint beside its model.npz, else 'mnist'.
    PathError if that checkpoint cannot be read."""
    return dataset or trained_on(run_settings(weights, "give --dataset"))


def _name_limit(directory):
    """The most bytes a name may have in ``directory`` (255 on ext4), asked of
    the nearest directory above it that exists."""
    missing = missing_directories(directory)
    return os.pathconf(os.path.dirname(missing[-1]) if missing else directory, "PC_NAME_MAX")


def _directory_problem(directory):
    """Why no file could be written in ``directory``, or None; makes nothing.

    A missing directory is judged by the nearest directory above it that
    exists, where it would be made. Tries writing a file there, as root may
    not be stopped by permission bits while a read-only file system stops
    everyone.
    """
    missing = missing_directories(directory)
    existing = os.path.dirname(missing[-1]) if missing else os.path.abspath(directory)
    if not os.path.isdir(existing):
        return "{} is not a directory".format(existing) if missing else "not a directory"
    # A dangling link (or a loop) looks missing, but no directory can be made there.
    for path in missing:
        link = dead_link(path)
        if link:
            return link if path == missing[0] else "{} is {}".format(path, link)
    longest = max([len(os.fsencode(os.path.basename(path))) for path in missing] + [0])
    limit = _name_limit(existing)
    if longest > limit:
        return "a name in it is {} bytes long; its file system takes at most {}".format(
            longest, limit)
    try:
        fd, probe = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        return "cannot write there ({})".format(e.strerror or e)
    return None


def writable_directory(directory, flag):
    """Make sure a file can be written in ``directory`` (made by whatever
    writes there, if missing): PathError, naming the flag, if not."""
    problem = _directory_problem(directory)
    if problem:
        raise PathError("{} {}: {}".format(flag, directory, problem))
    return directory


def writable_path(name):
    """``name``, or PathError if it could not be written (its directory is
    made by whatever writes it, if missing)."""
    if name.endswith(os.sep) or os.path.isdir(name):
        raise PathError("cannot write {}: it names a directory; give a file name".format(name))
    if dead_link(name) == LINK_LOOP:
        raise PathError("cannot write {}: it is {}".format(name, LINK_LOOP))
    # A link to a file is written through, as the shell's > does: judge where.
    directory = os.path.dirname(os.path.realpath(name) if os.path.islink(name)
                                else os.path.abspath(name))
    problem = _directory_problem(directory)
    if problem:
        raise PathError("cannot write {}: {}: {}".format(name, directory, problem))
    length, limit = len(os.fsencode(os.path.basename(name))), _name_limit(directory)
    if length > limit:
        raise PathError("cannot write {}: its name is {} bytes long; the file system takes "
                        "at most {}".format(name, length, limit))
    return name


def compile_out_of_space(error):
    """The disk's complaint ("No space left on device", "Disk quota exceeded")
    if ``error`` is Theano failing to compile for want of space, else None:
    its compiler's failure, or an OSError raised in Theano, which writes only
    in its compile directory."""
    if isinstance(error, OSError):
        in_theano = error.errno in OUT_OF_SPACE and _raised_in_theano(error)
        return os.strerror(error.errno) if in_theano else None
    if type(error) is Exception and "Compilation failed" in str(error):
        return next((os.strerror(number) for number in OUT_OF_SPACE
                     if os.strerror(number) in str(error)), None)
    return None


def _raised_in_theano(error):
    """Whether ``error`` was raised in Theano's code (which is then imported)."""
    theano = sys.modules.get("theano")
    package = os.path.dirname(theano.__file__) + os.sep if theano else None
    return package is not None and any(frame.filename.startswith(package) for frame in
                                       traceback.extract_tb(error.__traceback__))


def describe(error):
    """One line for an error: an OSError as its message and file, Theano out of
    disk space as where it compiles, anything else as str()."""
    complaint = compile_out_of_space(error)
    if complaint:
        import theano  # the error came from it: imported already
        return ("Theano cannot compile: {} in its compile directory {} (free some space "
                "there, or give it one on another disk: THEANO_FLAGS=base_compiledir=DIR)"
                .format(complaint, theano.config.compiledir))
    if isinstance(error, OSError) and error.strerror:
        # A rename names the file made, not the temporary file it came from.
        name = error.filename2 or error.filename
        return error.strerror + (": {}".format(name) if name else "")
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def point_at_devnull(*streams):
    """Point the files behind ``streams`` at /dev/null, where there are files
    (a notebook's streams have none)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in streams:
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            pass
    os.close(devnull)


def say(line):
    """Print one line of a command's report on standard output, at once. A
    write that fails (``> log`` on a full disk, ``| head -1`` whose reader has
    gone) raises OSError naming standard output. A character the output's
    encoding lacks (a path's "é" under PYTHONIOENCODING=ascii) is written as
    Python escapes it (``\\xe9``), as standard error writes it."""
    try:
        try:
            print(line, flush=True)
        except UnicodeEncodeError:
            encoding = sys.stdout.encoding
            print(line.encode(encoding, "backslashreplace").decode(encoding), flush=True)
    except OSError as e:
        raise OSError(e.errno, e.strerror, STDOUT) from None


def report_error(prog, error):
    """Print ``prog: error: <error>`` on stderr in one line; returns the exit
    code 1. Standard output's reader gone (``| head -1``) is no error: the
    command stops quietly, as a Unix tool killed by SIGPIPE does (code 141)."""
    if isinstance(error, BrokenPipeError) and error.filename == STDOUT:
        point_at_devnull(sys.stdout)  # Python's flush at exit would fail again
        return 128 + signal.SIGPIPE
    print("{}: error: {}".format(prog, describe(error)), file=sys.stderr)
    return 1


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C raises KeyboardInterrupt, so that
    a command stops as cleanly: temporary files and directories it made are
    removed on the way out."""

    def __init__(self, number):
        super().__init__(number)
        self.number = number


def exit_code(interrupt):
    """The shell's code for the signal behind a KeyboardInterrupt: 130 (Ctrl-C),
    143 (SIGTERM) or 129 (SIGHUP)."""
    return 128 + (interrupt.number if isinstance(interrupt, Interrupted) else signal.SIGINT)


def forget_terminal_after_hangup(number):
    """After SIGHUP the terminal is gone, and writing to it fails: point
    stdout and stderr at /dev/null."""
    if number == signal.SIGHUP:
        point_at_devnull(sys.stdout, sys.stderr)


@contextlib.contextmanager
def signals_handled(numbers, handler):
    """Within the block, ``handler(number, frame)`` handles the signals
    ``numbers``; after it, the handlers before it again."""
    previous = {number: signal.signal(number, handler) for number in numbers}
    try:
        yield
    finally:
        for number, before in previous.items():
            signal.signal(number, before)


@contextlib.contextmanager
def signals_noted(*numbers):
    """Within the block, each of the signals ``numbers`` is appended to the list
    the block is given, rather than stopping the program where it stands: the
    loop that asks it stops where it can. After SIGHUP the terminal is gone,
    and writing to it fails: output goes to /dev/null from then on."""
    noted = []

    def note(number, _):
        noted.append(number)
        forget_terminal_after_hangup(number)
    with signals_handled(numbers, note):
        yield noted


@contextlib.contextmanager
def stopping_signals_interrupt():
    """Within the block, SIGTERM (a batch scheduler, ``timeout``) and SIGHUP (a
    closed terminal) raise Interrupted, as Ctrl-C raises KeyboardInterrupt;
    without it they kill the process where it stands. Python handles signals
    in the main thread only: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(number, _):
        forget_terminal_after_hangup(number)
        raise Interrupted(number)
    with signals_handled((signal.SIGTERM, signal.SIGHUP), interrupt):
        yield


def reported_in_one_line(error, kinds=USER_ERRORS):
    """Whether a command reports ``error`` as one line: one of ``kinds``, or
    Theano out of disk space to compile (see ``compile_out_of_space``)."""
    return isinstance(error, kinds) or compile_out_of_space(error) is not None


def run_command(prog, action):
    """``action()``'s exit code, or 1 with a one-line error for a user's mistake,
    or the signal's code with one line if interrupted (Ctrl-C, SIGTERM, SIGHUP)."""
    try:
        with stopping_signals_interrupt():
            return action()
    except KeyboardInterrupt as e:
        print("{}: interrupted".format(prog), file=sys.stderr)
        return exit_code(e)
    except Exception as e:
        if not reported_in_one_line(e):
            raise
        return report_error(prog, e)
