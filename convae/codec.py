"""A trained network's reconstruct, encode and decode functions, for figures and notebooks."""
import lasagne
import theano
import theano.tensor as T

from convae.files import load_params
from convae.model import build_convolutional_autoencoder

CODE_LAYER = "auto_dense1A"


class Codec:
    """A built network with compiled reconstruct, encode and decode functions.

    reconstruct(x): (N, 1, 28, 28) -> (N, 1, 28, 28), dropout off.
    encode(x): (N, 1, 28, 28) -> (N, 256) codes (the ``auto_dense1A`` output).
    decode(z): (N, 256) -> (N, 1, 28, 28).
    """

    def __init__(self, weights=None):
        self.input_var = T.tensor4("inputs")
        self.network = build_convolutional_autoencoder(self.input_var)
        if weights is not None:
            load_params(weights, self.network)
        code_layer = next(layer for layer in
                          lasagne.layers.get_all_layers(self.network)
                          if layer.name == CODE_LAYER)
        code_var = T.matrix("code")
        output = lasagne.layers.get_output(self.network, deterministic=True)
        self.reconstruct = theano.function([self.input_var], output)
        self.encode = theano.function([self.input_var], lasagne.layers.get_output(
            code_layer, deterministic=True))
        self.decode = theano.function([code_var], lasagne.layers.get_output(
            self.network, {code_layer: code_var}, deterministic=True))

    def first_layer_filters(self):
        """The 32 first-layer filters, (32, 5, 5): also the decoder's last filters."""
        conv1 = lasagne.layers.get_all_layers(self.network)[1]
        return conv1.W.get_value()[:, 0]

