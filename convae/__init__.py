"""convae: the 2016 post *Convolutional Autoencoder for Dummies*, runnable today.

Importing convae sets Theano's defaults (float32, a linked OpenBLAS; see
``convae.theano_setup``) unless the user set them, and makes ``import lasagne``
work with Lasagne master's layer API on PyPI's Lasagne 0.1 too (see
``convae.lasagne_backport``), and makes Theano run the graph faster unless
``CONVAE_FAST=0`` (see ``convae.fast``). The network is in ``convae.model``.
"""
from . import theano_setup

theano_setup.configure()

from . import lasagne_backport  # noqa: E402,F401
from . import fast  # noqa: E402

fast.enable()

__version__ = "0.1.0"
