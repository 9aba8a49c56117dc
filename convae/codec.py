"""A trained network's reconstruct, encode and decode functions, for figures and notebooks."""
import lasagne
import numpy as np
import theano
import theano.tensor as T

from convae.files import load_params
from convae.model import build_convolutional_autoencoder

CODE_LAYER = "auto_dense1A"
# Images per call of a compiled function. A whole test set in one call took
# 1 GB more memory and 1.4-10x the time (a new batch size's kernels are
# measured once; cache misses); in slices of 500 the results are the same bits.
EVAL_BATCH = 500


class Codec:
    """A built network with compiled reconstruct, encode and decode functions.

    reconstruct(x): (N, 1, 28, 28) -> (N, 1, 28, 28), dropout off.
    encode(x): (N, 1, 28, 28) -> (N, 256) codes (the ``auto_dense1A`` output).
    decode(z): (N, 256) -> (N, 1, 28, 28).

    Images are floats with pixels in [0, 1) (``convae.data``'s: 8-bit pixels
    divided by 256; 1.0, as dividing by 255 gives, is taken too), codes
    floats; any float dtype is taken, as Theano's floatX (float32 unless
    THEANO_FLAGS says float64), the dtype of the results too. Other shapes,
    dtypes or pixel values are a ValueError saying what was expected.
    """

    def __init__(self, weights=None):
        """weights: a parameter file or a run directory holding one (model.npz);
        None leaves the network untrained (Lasagne's initial values)."""
        self.input_var = T.tensor4("inputs")
        self.network = build_convolutional_autoencoder(self.input_var)
        if weights is not None:
            load_params(weights, self.network)
        layers = lasagne.layers.get_all_layers(self.network)
        code_layer = next(layer for layer in layers if layer.name == CODE_LAYER)
        self.image_shape = tuple(layers[0].shape[1:])
        self.code_shape = (code_layer.num_units,)
        code_var = T.matrix("code")
        output = lasagne.layers.get_output(self.network, deterministic=True)
        self._reconstruct = theano.function([self.input_var], output)
        self._encode = theano.function([self.input_var], lasagne.layers.get_output(
            code_layer, deterministic=True))
        self._decode = theano.function([code_var], lasagne.layers.get_output(
            self.network, {code_layer: code_var}, deterministic=True))

    def reconstruct(self, images):
        """(N, 1, 28, 28) images -> (N, 1, 28, 28) reconstructions."""
        images = as_batch(images, self.image_shape, "images", pixels=True)
        return _apply(self._reconstruct, images, self.image_shape)

    def encode(self, images):
        """(N, 1, 28, 28) images -> (N, 256) codes."""
        images = as_batch(images, self.image_shape, "images", pixels=True)
        return _apply(self._encode, images, self.code_shape)

    def decode(self, codes):
        """(N, 256) codes -> (N, 1, 28, 28) images."""
        return _apply(self._decode, as_batch(codes, self.code_shape, "codes"), self.image_shape)

    def first_layer_filters(self):
        """The 32 first-layer filters, (32, 5, 5): also the decoder's last filters."""
        conv1 = lasagne.layers.get_all_layers(self.network)[1]
        return conv1.W.get_value()[:, 0]


def as_batch(values, shape, what, pixels=False):
    """values as a floatX array of shape (N,) + shape; ValueError, naming
    ``what``, if it is not one, if a value is NaN or infinite, or if ``pixels``
    and a value is not in [0, 1]."""
    values = np.asarray(values)
    if values.shape[1:] != shape or values.ndim != len(shape) + 1:
        raise ValueError("{} must be an array of shape (N, {}), got shape {}".format(
            what, ", ".join(str(n) for n in shape), values.shape))
    if values.dtype.kind != "f":
        hint = _float_pixels_hint(values) if pixels else ""
        raise ValueError("{} must be floats{}, got {}".format(what, hint, values.dtype))
    values = values.astype(theano.config.floatX, copy=False)
    if not values.size:
        return values
    low, high = values.min(), values.max()  # NaN if any value is NaN
    if not (np.isfinite(low) and np.isfinite(high)):
        # NaN codes decoded to NaN images without a word.
        raise ValueError("{} must be finite, got NaN or infinite values".format(what))
    if pixels and not (low >= 0 and high <= 1):
        # Pixels of 0-255 in a float array, or standardised ones: as wrong as
        # 8-bit pixels, and silent but for the garbage out.
        raise ValueError("{} must be floats in [0, 1): divide 8-bit pixels by 256, got "
                         "values from {:g} to {:g}".format(what, low, high))
    return values


def _float_pixels_hint(values):
    """How to make float pixels in [0, 1) of the integer or boolean ``values``:
    8-bit ones are divided by 256, but binarized ones (0 and 1, or booleans)
    divided by 256 would be near black, and pass every check."""
    if values.dtype.kind not in "biu" or not values.size:
        return " in [0, 1)"
    low, high = values.min(), values.max()
    if low >= 0 and high <= 1:
        return " in [0, 1): convert binarized pixels (0 and 1) as they are, without dividing"
    if low >= 0 and high <= 255:
        return " in [0, 1): divide 8-bit pixels by 256"
    return " in [0, 1)"


def _apply(function, batch, out_shape):
    """function over batch, EVAL_BATCH rows per call: (N, ...) -> (N,) + out_shape floatX."""
    return np.concatenate([np.zeros((0,) + out_shape, theano.config.floatX)] + [
        function(batch[start:start + EVAL_BATCH]) for start in range(0, len(batch), EVAL_BATCH)])
