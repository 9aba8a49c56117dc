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
from convae import runtime

runtime.prepare()

__version__ = "0.1.0"
