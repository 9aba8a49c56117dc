"""convae: the 2016 post *Convolutional Autoencoder for Dummies*, runnable today.

The post's code: ``convae.model`` (the network), ``convae.data`` (MNIST),
``convae.train`` (the training loop and command), ``convae.figures``,
``convae.codec``, ``convae.reconstruct`` and ``convae.make_figures`` (the
figures and their commands). What makes Theano 1.0.5 run it today, and run it
fast, is ``convae.runtime``.

Importing convae sets Theano's defaults (float32, a linked OpenBLAS) unless
the user set them, and makes ``import lasagne`` work with Lasagne master's
layers on PyPI's Lasagne 0.1 too: import it before Theano or Lasagne.
Nothing else happens on import; ``convae.runtime.enable()`` switches on the
fast path, as the commands do.
"""
import sys

from convae import runtime


def _one_line_for(error, line, previous_hook):
    """A sys.excepthook that reports ``error`` as ``line`` instead of a traceback."""
    def excepthook(kind, value, traceback):
        if value is error:
            sys.stderr.write(line + "\n")
        else:
            previous_hook(kind, value, traceback)
    return excepthook


try:
    runtime.prepare()
except KeyboardInterrupt as e:
    # Ctrl-C in the half second that loading Theano takes: a command that
    # started loading convae ends with one line, not a 50-line traceback.
    sys.excepthook = _one_line_for(
        e, "convae: interrupted while loading Theano and Lasagne", sys.excepthook)
    raise
except runtime.defaults.SettingError as e:
    # A setting no command could start with, before any command's own
    # error handling: one line too.
    sys.excepthook = _one_line_for(e, "convae: error: {}".format(e), sys.excepthook)
    raise

__version__ = "0.1.0"
