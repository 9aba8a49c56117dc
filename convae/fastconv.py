"""Batched convolutions for the fast path: one large matrix product per chunk of images.

Theano's CPU convolution (``CorrMM`` and its two gradients) unrolls one image
at a time and multiplies it by the filters: for the post's second layer that
is a 32x800 by 800x64 product per image, too small for OpenBLAS to run near
its peak. ``BatchedCorr`` computes exactly the same three correlations, but
unrolls a chunk of images side by side (sized to stay in the core's cache) so
each BLAS call multiplies 32x800 by 800x(64 x images); OpenMP gives each core
its own chunks. ``enable()`` in ``convae.fast`` registers the rewrite that
swaps it in for float32 ``CorrMM`` ops with the post's settings (no padding,
stride 1, no dilation, one group); anything else keeps Theano's op.

Shapes: bottom (N, C, H, W), weights (F, C, kh, kw), top (N, F, H-kh+1,
W-kw+1); correlation means top[n,f,y,x] = sum over c,i,j of
bottom[n,c,y+i,x+j] * weights[f,c,i,j] (no filter flip, as CorrMM).
"""
import hashlib

import theano
import theano.tensor as T
from theano.tensor import blas_headers
from theano.tensor.blas import ldflags
from theano.tensor.nnet.corr import CorrMM, CorrMM_gradInputs, CorrMM_gradWeights

# Each thread's unrolled chunk aims at this many bytes (a Zen core has 512
# KiB of L2); a chunk is never less than one image.
CHUNK_BYTES = 1 << 20

DIRECTIONS = ("forward", "grad_inputs", "grad_weights")

SUPPORT_CODE = r"""
extern "C" void openblas_set_num_threads(int) __attribute__((weak));
extern "C" int openblas_get_num_threads(void) __attribute__((weak));

/* Unroll images [0, nb) of x (nb, C, H, W) into col (C*kh*kw, nb*P): row
   (c, i, j), column (n, y, x) holds x[n, c, y+i, x+j]. */
static void convae_im2col(const float* x, int nb, int C, int H, int W,
                          int kh, int kw, float* col)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow;
    const long ncols = (long)nb * P;
    for (int c = 0; c < C; c++)
        for (int i = 0; i < kh; i++)
            for (int j = 0; j < kw; j++) {
                float* row = col + ((long)(c * kh + i) * kw + j) * ncols;
                for (int n = 0; n < nb; n++) {
                    const float* src = x + ((long)(n * C + c) * H + i) * W + j;
                    float* dst = row + (long)n * P;
                    for (int y = 0; y < oh; y++)
                        memcpy(dst + y * ow, src + y * W, ow * sizeof(float));
                }
            }
}

/* The adjoint of convae_im2col: add col (C*kh*kw, nb*P) into x (nb, C, H, W). */
static void convae_col2im(const float* col, int nb, int C, int H, int W,
                          int kh, int kw, float* x)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow;
    const long ncols = (long)nb * P;
    for (int n = 0; n < nb; n++)
        for (int c = 0; c < C; c++) {
            float* image = x + (long)(n * C + c) * H * W;
            for (int i = 0; i < kh; i++)
                for (int j = 0; j < kw; j++) {
                    const float* src = col + ((long)(c * kh + i) * kw + j) * ncols
                                       + (long)n * P;
                    for (int y = 0; y < oh; y++) {
                        float* dst = image + (y + i) * W + j;
                        const float* s = src + y * ow;
                        for (int x_ = 0; x_ < ow; x_++)
                            dst[x_] += s[x_];
                    }
                }
        }
}

/* (nb, F, P) -> (F, nb*P) and back. */
static void convae_to_channel_major(const float* a, int nb, int F, int P, float* b)
{
    for (int n = 0; n < nb; n++)
        for (int f = 0; f < F; f++)
            memcpy(b + (long)f * nb * P + (long)n * P, a + ((long)n * F + f) * P,
                   P * sizeof(float));
}

static void convae_to_image_major(const float* b, int nb, int F, int P, float* a)
{
    for (int n = 0; n < nb; n++)
        for (int f = 0; f < F; f++)
            memcpy(a + ((long)n * F + f) * P, b + (long)f * nb * P + (long)n * P,
                   P * sizeof(float));
}

static int convae_thread_num(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int convae_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* direction 0: out = top from (a = bottom, b = weights);
   direction 1: out = bottom from (a = weights, b = top);
   direction 2: out = weights gradient from (a = bottom, b = top).
   Returns 0, or -1 if memory ran out. */
static int convae_corr(int direction, const float* a, const float* b, float* out,
                       int N, int C, int H, int W, int F, int kh, int kw,
                       long chunk_bytes)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow, K = C * kh * kw;
    const float* bottom = direction == 1 ? NULL : a;
    const float* weights = direction == 0 ? b : (direction == 1 ? a : NULL);
    const float* top = direction == 0 ? NULL : b;
    const int threads = convae_max_threads();
    long per_image = (long)K * P * sizeof(float);
    int nb = (int)(chunk_bytes / per_image);
    if (nb < 1) nb = 1;
    if (nb > (N + threads - 1) / threads) nb = (N + threads - 1) / threads;
    if (nb < 1) nb = 1;
    const int chunks = (N + nb - 1) / nb;
    float* partial = NULL;
    if (direction == 2) {
        partial = (float*)calloc((size_t)threads * F * K, sizeof(float));
        if (partial == NULL) return -1;
    }
    if (direction == 1)
        memset(out, 0, (size_t)N * C * H * W * sizeof(float));
    int blas_threads = openblas_get_num_threads ? openblas_get_num_threads() : 0;
    if (openblas_set_num_threads) openblas_set_num_threads(1);
    int failed = 0;
    #pragma omp parallel
    {
        float* col = (float*)malloc((size_t)K * nb * P * sizeof(float));
        float* fp = (float*)malloc((size_t)F * nb * P * sizeof(float));
        const float one = 1.0f, zero = 0.0f;
        #pragma omp for schedule(static)
        for (int chunk = 0; chunk < chunks; chunk++) {
            if (col == NULL || fp == NULL) {
                failed = 1;
                continue;
            }
            const int n0 = chunk * nb;
            const int m = N - n0 < nb ? N - n0 : nb;
            int ncols = m * P;
            if (direction == 0) {
                convae_im2col(bottom + (long)n0 * C * H * W, m, C, H, W, kh, kw, col);
                /* fp (F, ncols) = weights (F, K) . col (K, ncols) */
                sgemm_("N", "N", &ncols, &F, &K, &one, col, &ncols,
                       weights, &K, &zero, fp, &ncols);
                convae_to_image_major(fp, m, F, P, out + (long)n0 * F * P);
            } else if (direction == 1) {
                convae_to_channel_major(top + (long)n0 * F * P, m, F, P, fp);
                /* col (K, ncols) = weights^T (K, F) . fp (F, ncols) */
                sgemm_("N", "T", &ncols, &K, &F, &one, fp, &ncols,
                       weights, &K, &zero, col, &ncols);
                convae_col2im(col, m, C, H, W, kh, kw, out + (long)n0 * C * H * W);
            } else {
                convae_im2col(bottom + (long)n0 * C * H * W, m, C, H, W, kh, kw, col);
                convae_to_channel_major(top + (long)n0 * F * P, m, F, P, fp);
                /* partial (F, K) += fp (F, ncols) . col^T (ncols, K) */
                sgemm_("T", "N", &K, &F, &ncols, &one, col, &ncols,
                       fp, &ncols, &one,
                       partial + (long)convae_thread_num() * F * K, &K);
            }
        }
        free(col);
        free(fp);
    }
    if (openblas_set_num_threads) openblas_set_num_threads(blas_threads);
    if (direction == 2) {
        for (long k = 0; k < (long)F * K; k++) {
            float sum = 0;
            for (int t = 0; t < threads; t++)
                sum += partial[(long)t * F * K + k];
            out[k] = sum;
        }
        free(partial);
    }
    return failed ? -1 : 0;
}
"""

C_CODE = r"""
{
    PyArrayObject* a = PyArray_GETCONTIGUOUS(%(a)s);
    PyArrayObject* b = PyArray_GETCONTIGUOUS(%(b)s);
    if (a == NULL || b == NULL) { Py_XDECREF(a); Py_XDECREF(b); %(fail)s }
    const npy_intp* ad = PyArray_DIMS(a);
    const npy_intp* bd = PyArray_DIMS(b);
    const int direction = %(direction)d;
    /* bottom (N, C, H, W), weights (F, C, kh, kw), top (N, F, oh, ow) */
    npy_intp N, C, H, W, F, kh, kw, dims[4];
    int bad = 0;
    if (direction == 0) {
        N = ad[0]; C = ad[1]; H = ad[2]; W = ad[3];
        F = bd[0]; kh = bd[2]; kw = bd[3];
        bad = bd[1] != C || kh > H || kw > W;
        dims[0] = N; dims[1] = F; dims[2] = H - kh + 1; dims[3] = W - kw + 1;
    } else if (direction == 1) {
        F = ad[0]; C = ad[1]; kh = ad[2]; kw = ad[3];
        N = bd[0]; H = bd[2] + kh - 1; W = bd[3] + kw - 1;
        bad = bd[1] != F;
        dims[0] = N; dims[1] = C; dims[2] = H; dims[3] = W;
    } else {
        N = ad[0]; C = ad[1]; H = ad[2]; W = ad[3];
        F = bd[1]; kh = H - bd[2] + 1; kw = W - bd[3] + 1;
        bad = bd[0] != N || kh < 1 || kw < 1;
        dims[0] = F; dims[1] = C; dims[2] = kh; dims[3] = kw;
    }
    if (bad) {
        PyErr_Format(PyExc_ValueError,
            "BatchedCorr: shapes (%%ld, %%ld, %%ld, %%ld) and (%%ld, %%ld, %%ld, %%ld) do not fit",
            (long)ad[0], (long)ad[1], (long)ad[2], (long)ad[3],
            (long)bd[0], (long)bd[1], (long)bd[2], (long)bd[3]);
        Py_DECREF(a); Py_DECREF(b);
        %(fail)s
    }
    if (%(out)s == NULL || !PyArray_IS_C_CONTIGUOUS(%(out)s)
            || !PyArray_CompareLists(PyArray_DIMS(%(out)s), dims, 4)) {
        Py_XDECREF(%(out)s);
        %(out)s = (PyArrayObject*)PyArray_EMPTY(4, dims, NPY_FLOAT32, 0);
    }
    int status = -1;
    if (%(out)s != NULL)
        status = convae_corr(direction, (const float*)PyArray_DATA(a),
                             (const float*)PyArray_DATA(b),
                             (float*)PyArray_DATA(%(out)s),
                             N, C, H, W, F, kh, kw, %(chunk_bytes)dL);
    Py_DECREF(a); Py_DECREF(b);
    if (status != 0) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        %(fail)s
    }
}
"""


class BatchedCorr(theano.gof.OpenMPOp):
    """One of CorrMM's three valid, stride-1 float32 correlations, computed in chunks of images.

    direction 'forward': (bottom, weights) -> top; 'grad_inputs':
    (weights, top) -> bottom; 'grad_weights': (bottom, top) -> weights. All
    4-D float32, shapes as in the module docstring; the output's
    broadcastable pattern is the one CorrMM's ops give.
    """

    __props__ = ("direction",)

    def __init__(self, direction, openmp=None):
        if direction not in DIRECTIONS:
            raise ValueError("direction must be one of {}".format(DIRECTIONS))
        super().__init__(openmp=openmp)
        self.direction = direction

    def make_node(self, a, b):
        a, b = T.as_tensor_variable(a), T.as_tensor_variable(b)
        if (a.ndim, b.ndim, a.dtype, b.dtype) != (4, 4, "float32", "float32"):
            raise TypeError("BatchedCorr takes two 4-D float32 tensors")
        if self.direction == "forward":
            broadcastable = (a.broadcastable[0], b.broadcastable[0])
        elif self.direction == "grad_inputs":
            broadcastable = (b.broadcastable[0], a.broadcastable[1])
        else:
            broadcastable = (b.broadcastable[1], a.broadcastable[1])
        out = T.TensorType("float32", broadcastable + (False, False))()
        return theano.Apply(self, [a, b], [out])

    def infer_shape(self, node, shapes):
        (a0, a1, a2, a3), (b0, b1, b2, b3) = shapes
        if self.direction == "forward":
            return [(a0, b0, a2 - b2 + 1, a3 - b3 + 1)]
        if self.direction == "grad_inputs":
            return [(b0, a1, b2 + a2 - 1, b3 + a3 - 1)]
        return [(b1, a1, a2 - b2 + 1, a3 - b3 + 1)]

    def c_headers(self):
        return ["<string.h>", "<stdlib.h>"] + super().c_headers()

    def c_support_code(self):
        return blas_headers.blas_header_text() + SUPPORT_CODE

    def c_libraries(self):
        return ldflags()

    def c_lib_dirs(self):
        return ldflags(libs=False, libs_dir=True)

    def c_header_dirs(self):
        return ldflags(libs=False, include_dir=True)

    def c_compile_args(self):
        return ldflags(libs=False, flags=True) + super().c_compile_args()

    def c_code(self, node, name, inputs, outputs, sub):
        return C_CODE % dict(a=inputs[0], b=inputs[1], out=outputs[0], fail=sub["fail"],
                             direction=DIRECTIONS.index(self.direction),
                             chunk_bytes=CHUNK_BYTES)

    def c_code_cache_version(self):
        source = hashlib.sha256((SUPPORT_CODE + C_CODE).encode()).hexdigest()
        return (source, self.openmp, CHUNK_BYTES, blas_headers.blas_header_version())


def _is_plain(op):
    """True for a CorrMM-family op with the post's settings: valid, stride 1, no dilation, one group."""
    return (op.border_mode in ("valid", (0, 0)) and tuple(op.subsample) == (1, 1)
            and tuple(op.filter_dilation) == (1, 1) and op.num_groups == 1
            and not op.unshared)


@theano.gof.local_optimizer([CorrMM, CorrMM_gradInputs, CorrMM_gradWeights])
def local_batched_corr(node):
    """Replace a plain float32 CorrMM, CorrMM_gradInputs or CorrMM_gradWeights by BatchedCorr."""
    op = node.op
    if (type(op) not in (CorrMM, CorrMM_gradInputs, CorrMM_gradWeights)
            or not _is_plain(op) or not ldflags()
            or any(v.dtype != "float32" for v in node.inputs[:2])):
        return False
    direction = {CorrMM: "forward", CorrMM_gradInputs: "grad_inputs",
                 CorrMM_gradWeights: "grad_weights"}[type(op)]
    out = BatchedCorr(direction)(node.inputs[0], node.inputs[1])
    if out.type != node.outputs[0].type:
        return False
    return [out]
