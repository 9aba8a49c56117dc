"""NumPy/SciPy reference implementations that the tests compare Theano against.

Written from the definitions, independently of convae's and Lasagne's code.
All arrays are (batch, channels, rows, cols).
"""
import numpy as np
from scipy import signal


def conv2d_valid(x, W):
    """True ('valid', flipped-filter) convolution; W is (out, in, r, c)."""
    n, _, rows, cols = x.shape
    out = np.zeros((n, W.shape[0], rows - W.shape[2] + 1,
                    cols - W.shape[3] + 1), dtype=np.float64)
    for i in range(n):
        for o in range(W.shape[0]):
            for c in range(W.shape[1]):
                out[i, o] += signal.convolve2d(x[i, c], W[o, c], mode="valid")
    return out


def maxpool2(x):
    """2x2 max pooling with stride 2 on even-sized maps."""
    n, c, rows, cols = x.shape
    return x.reshape(n, c, rows // 2, 2, cols // 2, 2).max(axis=(3, 5))


def transposed_conv2d(x, W, stride=(1, 1), crop=(0, 0), flip_filters=False,
                      output_size=None):
    """Transposed convolution by its textbook recipe.

    Dilate the input by ``stride``, pad it with ``filter - 1`` zeros on every
    side, cross-correlate with W (shape (in, out, r, c); flipped first if
    ``flip_filters``), then remove ``crop`` rows/cols from each border. A
    larger ``output_size`` (possible when stride > 1) keeps that many rows/cols
    from the top-left crop onwards: the bottom/right crop shrinks, and rows
    past the end of the full result are zero.
    """
    n, channels, rows, cols = x.shape
    fr, fc = W.shape[2:]
    if flip_filters:
        W = W[:, :, ::-1, ::-1]
    dilated = np.zeros((n, channels, (rows - 1) * stride[0] + 1,
                        (cols - 1) * stride[1] + 1))
    dilated[:, :, ::stride[0], ::stride[1]] = x
    padded = np.pad(dilated, ((0, 0), (0, 0), (fr - 1, fr - 1),
                              (fc - 1, fc - 1)))
    full = np.zeros((n, W.shape[1], padded.shape[2] - fr + 1,
                     padded.shape[3] - fc + 1))
    for i in range(n):
        for o in range(W.shape[1]):
            for c in range(channels):
                full[i, o] += signal.correlate2d(padded[i, c], W[c, o],
                                                 mode="valid")
    if output_size is None:
        output_size = (full.shape[2] - 2 * crop[0], full.shape[3] - 2 * crop[1])
    out = np.zeros(full.shape[:2] + tuple(output_size))
    kept = full[:, :, crop[0]:crop[0] + output_size[0],
                crop[1]:crop[1] + output_size[1]]
    out[:, :, :kept.shape[2], :kept.shape[3]] = kept
    return out


def upscale_repeat(x, factors):
    """Nearest-neighbour upscaling: each value becomes a block of its copies."""
    return np.kron(x, np.ones((1, 1) + tuple(factors), dtype=x.dtype))


def upscale_repeat_grad(g, factors):
    """The gradient of upscale_repeat for g (N, C, a*H, b*W), as Lasagne
    master's graph sums it: each block's rows first, then its columns, each
    sum in float64 rounded to float32."""
    (a, b), (n, c, rows, cols) = factors, g.shape
    over_rows = g.reshape(n, c, rows // a, a, cols).sum(axis=3, dtype=np.float64)
    over_rows = over_rows.astype(np.float32).reshape(n, c, rows // a, cols // b, b)
    return over_rows.sum(axis=4, dtype=np.float64).astype(np.float32)


def upscale_dilate(x, factors):
    """Each value goes to the top-left of its block; the rest is zero."""
    block = np.zeros((1, 1) + tuple(factors), dtype=x.dtype)
    block[0, 0, 0, 0] = 1
    return np.kron(x, block)


def autoencoder_forward(values, x):
    """The post's whole network with dropout off, in NumPy/SciPy.

    values: parameter arrays in Lasagne's order (conv1 W, b, conv2 W, b,
    dense 256 W, b, dense 512 W, b, deconv2 b, deconv1 b); the deconvolutions
    reuse the convolutions' W. x: (N, 1, 28, 28) -> (N, 1, 28, 28).
    """
    W1, b1, W2, b2, Wd1, bd1, Wd2, bd2, bt2, bt1 = [np.asarray(v, np.float64)
                                                    for v in values]
    x = np.asarray(x, np.float64)
    h = maxpool2(np.tanh(conv2d_valid(x, W1) + b1[None, :, None, None]))
    h = maxpool2(np.tanh(conv2d_valid(h, W2) + b2[None, :, None, None]))
    h = np.tanh(h.reshape(len(x), 512) @ Wd1 + bd1)
    h = np.tanh(h @ Wd2 + bd2)
    h = upscale_repeat(h.reshape(len(x), 32, 4, 4), (2, 2))
    h = np.maximum(transposed_conv2d(h, W2) + bt2[None, :, None, None], 0)
    h = upscale_repeat(h, (2, 2))
    return np.maximum(transposed_conv2d(h, W1) + bt1[None, :, None, None], 0)


MRG_M1, MRG_M2 = 2 ** 31 - 1, 2 ** 31 - 21069


def mrg31k3p_uniform(states, n, dtype):
    """n uniform samples of L'Ecuyer and Touzin's MRG31k3p, from its definition.

    states: int (streams, 6), each row x1[k-1], x1[k-2], x1[k-3], x2[k-1],
    x2[k-2], x2[k-3]; sample i comes from stream i % streams, each stream's
    in turn. x1[k] = (2^22 x1[k-2] + (2^7 + 1) x1[k-3]) mod m1, x2[k] = (2^15
    x2[k-1] + (2^15 + 1) x2[k-3]) mod m2, and the sample is (x1 - x2) mod m1
    (m1 in place of 0) times 1 / 2^31 in ``dtype`` (the float32 constant
    rounded as Theano's is). Returns (samples, advanced states).
    """
    s = np.array(states, dtype=np.int64)
    out = np.empty(n, dtype=dtype)
    norm = dtype(4.6566126e-10) if dtype == np.float32 else 2.0 ** -31
    for start in range(0, n, len(s)):
        rows = min(len(s), n - start)
        x = s[:rows]
        x1 = (2 ** 22 * x[:, 1] + (2 ** 7 + 1) * x[:, 2]) % MRG_M1
        x2 = (2 ** 15 * x[:, 3] + (2 ** 15 + 1) * x[:, 5]) % MRG_M2
        x[:] = np.stack([x1, x[:, 0], x[:, 1], x2, x[:, 3], x[:, 4]], axis=1)
        diff = (x1 - x2) % MRG_M1
        diff[diff == 0] = MRG_M1
        out[start:start + rows] = diff.astype(dtype) * norm
    return out, s.astype(np.int32)
