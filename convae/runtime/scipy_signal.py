"""Give Theano 1.0.5's Python convolutions the scipy.signal internals they import.

Theano 1.0.5 imports ``_valfrommode``, ``_bvalfromboundary`` and ``convolve``
from ``scipy.signal.signaltools`` and ``_convolve2d`` from
``scipy.signal.sigtools``. scipy 1.8 moved them to ``scipy.signal._signaltools``
and ``scipy.signal._sigtools``, and the old modules no longer hand out private
names, so Theano's import fails without a word, and a graph the optimizer
leaves with an abstract convolution (``optimizer=None``) stops at its first
call: "AbstractConv perform requires the python package for scipy.signal to be
installed". ``fix()`` hands Theano's two modules the names from where scipy
keeps them now.
"""
import importlib


def fix():
    """Make Theano's Python convolutions (abstract_conv, conv) find scipy.signal's internals."""
    from theano.tensor.nnet import abstract_conv, conv
    try:
        tools = importlib.import_module("scipy.signal._signaltools")
        sigtools = importlib.import_module("scipy.signal._sigtools")
        names = {"_valfrommode": tools._valfrommode,
                 "_bvalfromboundary": tools._bvalfromboundary,
                 "convolve": tools.convolve, "_convolve2d": sigtools._convolve2d}
    except (ImportError, AttributeError):  # another scipy: leave Theano as it found it
        return
    for module in (abstract_conv, conv):
        if not module.imported_scipy_signal:
            vars(module).update(names, imported_scipy_signal=True)
