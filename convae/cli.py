"""What convae's commands share: flags, path checks, and the one-line error."""
import argparse
import os
import sys

from convae import data
from convae.files import SHIPPED_WEIGHTS, ParameterFileError

# What the figure commands report as a one-line error rather than a traceback.
USER_ERRORS = (ValueError, data.DataError, ParameterFileError, OSError)


def positive_int(text):
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer, got %s" % text)
    return value


def common_arguments(parser):
    """Add the flags shared by the figure commands: weights and data."""
    parser.add_argument("--weights", help="model.npz from convae-train, or its run "
                        "directory (default: the weights shipped with convae)")
    parser.add_argument("--data-dir", help="directory with the IDX files "
                        "(default: as convae-train)")
    parser.add_argument("--dataset", choices=sorted(data.DATASETS), default="mnist")


def weights_path(path):
    """The model.npz for --weights: the shipped one for None, the file itself, or DIR/model.npz."""
    if path is None:
        return SHIPPED_WEIGHTS
    if os.path.isdir(path):
        path = os.path.join(path, "model.npz")
    if not os.path.isfile(path):
        raise ValueError("no weights at {}".format(path))
    return path


def writable_path(path):
    """Create path's directory if needed; ValueError if it cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise ValueError("cannot create {}: {}".format(directory, e.strerror))
    if not os.access(directory, os.W_OK) or os.path.isdir(path):
        raise ValueError("cannot write {}".format(path))
    return path


def report_error(prog, error):
    """Print ``prog: error: <error>`` on stderr; returns the exit code 1."""
    print("{}: error: {}".format(prog, error), file=sys.stderr)
    return 1


def run_command(prog, action):
    """``action()``'s exit code, or 1 with a one-line error for a user's mistake."""
    try:
        return action()
    except USER_ERRORS as e:
        return report_error(prog, e)
