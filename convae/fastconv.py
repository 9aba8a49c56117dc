"""Faster convolutions for the fast path: the same three correlations as CorrMM.

Theano's CPU convolution (``CorrMM`` and its two gradients) unrolls one image
at a time and multiplies it by the filters: for the post's second layer that
is a 32x800 by 800x64 product per image, a shape at which OpenBLAS runs at
about half its peak, after copying every input value 25 times. ``BatchedCorr``
computes the same three correlations two ways:

* where the filters (forward, gradient for the weights) or the input channels
  (gradient for the inputs) come in multiples of 16 and the CPU has AVX2 and
  FMA (checked at run time), with direct kernels: the sums for 16 channels of
  6 pixels (for short sums, such as the first layer's 25 products, 8 filters
  of 8 pixels) stay in vector registers, fed straight from the images with no
  unrolled copy, one image (or for the weights, one cache-sized chunk of
  images) per core at a time;
* otherwise (the post's last layer, with one channel) by unrolling a
  cache-sized chunk of images side by side for one larger BLAS product.

``convae.fast`` registers the rewrite that swaps it in for float32 ``CorrMM``
ops with the post's settings (no padding, stride 1, no dilation, one group);
anything else keeps Theano's op.

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
#include <immintrin.h>

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

/* Direct kernels, for 16 filters (forward) or 16 input channels (gradient
   for the inputs) at a time: the 16 results for each of 6 output pixels stay
   in 12 AVX registers while the sum runs, each step multiplying one
   broadcast input value by two 8-float vectors of weights. No unrolled
   copy of the input is made. */
#define CONVAE_PIXELS 6

#define CONVAE_STEP(t, value)                                              \
    {                                                                      \
        const __m256 v_ = _mm256_broadcast_ss(value);                      \
        acc[t][0] = _mm256_fmadd_ps(v_, w0, acc[t][0]);                    \
        acc[t][1] = _mm256_fmadd_ps(v_, w1, acc[t][1]);                    \
    }

/* Add pixel t's 16 sums into the (H, W, C) image at d + its offset. */
#define CONVAE_ADD(t)                                                      \
    if (t < real) {                                                        \
        float* e_ = d + ((long)row[t] * W + col[t]) * C;                   \
        _mm256_storeu_ps(e_, _mm256_add_ps(_mm256_loadu_ps(e_), acc[t][0]));\
        _mm256_storeu_ps(e_ + 8, _mm256_add_ps(_mm256_loadu_ps(e_ + 8), acc[t][1]));\
    }

/* The accumulators to memory, with constant indices only: indexing them with
   a variable would make gcc keep them in memory throughout the sum. */
__attribute__((target("avx2,fma")))
static inline void convae_store_block(__m256 acc[CONVAE_PIXELS][2],
                                      float result[CONVAE_PIXELS][16])
{
    for (int t = 0; t < CONVAE_PIXELS; t++) {
        _mm256_storeu_ps(result[t], acc[t][0]);
        _mm256_storeu_ps(result[t] + 8, acc[t][1]);
    }
}

/* Pixel block starting at p0: offsets y*W + x of its pixels in an input
   map of width W; a short last block repeats its last pixel. Returns the
   number of real pixels. */
static int convae_block(int p0, int P, int ow, int W, int* row, int* col)
{
    const int real = P - p0 < CONVAE_PIXELS ? P - p0 : CONVAE_PIXELS;
    for (int t = 0; t < CONVAE_PIXELS; t++) {
        const int p = p0 + (t < real ? t : real - 1);
        row[t] = p / ow;
        col[t] = p % ow;
    }
    return real;
}

/* One image's top y (F, oh, ow) from its bottom x (C, H, W) and Wt, the
   weights as (K, F), with kofs[k] the offset of (c, i, j) in x. F % 16 == 0. */
__attribute__((target("avx2,fma")))
static void convae_direct_forward(const float* x, const float* Wt, const int* kofs,
                                  float* y, int C, int H, int W, int F, int kh, int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow, K = C * kh * kw;
    {
        for (int p0 = 0; p0 < P; p0 += CONVAE_PIXELS) {
            int row[CONVAE_PIXELS], col[CONVAE_PIXELS], off[CONVAE_PIXELS];
            const int real = convae_block(p0, P, ow, W, row, col);
            for (int t = 0; t < CONVAE_PIXELS; t++) off[t] = row[t] * W + col[t];
            for (int fb = 0; fb < F; fb += 16) {
                __m256 acc[CONVAE_PIXELS][2];
                for (int t = 0; t < CONVAE_PIXELS; t++)
                    acc[t][0] = acc[t][1] = _mm256_setzero_ps();
                for (int k = 0; k < K; k++) {
                    const __m256 w0 = _mm256_loadu_ps(Wt + (long)k * F + fb);
                    const __m256 w1 = _mm256_loadu_ps(Wt + (long)k * F + fb + 8);
                    const float* s = x + kofs[k];
                    CONVAE_STEP(0, s + off[0]) CONVAE_STEP(1, s + off[1])
                    CONVAE_STEP(2, s + off[2]) CONVAE_STEP(3, s + off[3])
                    CONVAE_STEP(4, s + off[4]) CONVAE_STEP(5, s + off[5])
                }
                float result[CONVAE_PIXELS][16];
                convae_store_block(acc, result);
                for (int f = 0; f < 16; f++)
                    for (int t = 0; t < real; t++)
                        y[(long)(fb + f) * P + p0 + t] = result[t][f];
            }
        }
    }
}

/* The forward correlation for a short sum (few input channels: K < 64),
   where storing 6 pixels x 16 filters one value at a time would cost as much
   as the sum: 8 pixels x 8 filters of sums in registers, transposed in
   registers at the end so that each filter's 8 pixels go out as one vector.
   Same arguments as convae_direct_forward; F % 8 == 0, P % 8 == 0. */
__attribute__((target("avx2,fma")))
static void convae_direct_forward_short(const float* x, const float* Wt, const int* kofs,
                                        float* y, int C, int H, int W, int F,
                                        int kh, int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow, K = C * kh * kw;
    for (int p0 = 0; p0 < P; p0 += 8) {
        int off[8];
        for (int t = 0; t < 8; t++)
            off[t] = (p0 + t) / ow * W + (p0 + t) % ow;
        for (int fb = 0; fb < F; fb += 8) {
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0,
                   a4 = a0, a5 = a0, a6 = a0, a7 = a0;
            for (int k = 0; k < K; k++) {
                const __m256 w = _mm256_loadu_ps(Wt + (long)k * F + fb);
                const float* s = x + kofs[k];
                a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(s + off[0]), w, a0);
                a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(s + off[1]), w, a1);
                a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(s + off[2]), w, a2);
                a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(s + off[3]), w, a3);
                a4 = _mm256_fmadd_ps(_mm256_broadcast_ss(s + off[4]), w, a4);
                a5 = _mm256_fmadd_ps(_mm256_broadcast_ss(s + off[5]), w, a5);
                a6 = _mm256_fmadd_ps(_mm256_broadcast_ss(s + off[6]), w, a6);
                a7 = _mm256_fmadd_ps(_mm256_broadcast_ss(s + off[7]), w, a7);
            }
            /* a_t holds filters fb..fb+7 of pixel t; make row f = pixels 0..7. */
            const __m256 u0 = _mm256_unpacklo_ps(a0, a1), u1 = _mm256_unpackhi_ps(a0, a1),
                         u2 = _mm256_unpacklo_ps(a2, a3), u3 = _mm256_unpackhi_ps(a2, a3),
                         u4 = _mm256_unpacklo_ps(a4, a5), u5 = _mm256_unpackhi_ps(a4, a5),
                         u6 = _mm256_unpacklo_ps(a6, a7), u7 = _mm256_unpackhi_ps(a6, a7);
            const __m256 v0 = _mm256_shuffle_ps(u0, u2, 0x44), v1 = _mm256_shuffle_ps(u0, u2, 0xEE),
                         v2 = _mm256_shuffle_ps(u1, u3, 0x44), v3 = _mm256_shuffle_ps(u1, u3, 0xEE),
                         v4 = _mm256_shuffle_ps(u4, u6, 0x44), v5 = _mm256_shuffle_ps(u4, u6, 0xEE),
                         v6 = _mm256_shuffle_ps(u5, u7, 0x44), v7 = _mm256_shuffle_ps(u5, u7, 0xEE);
            float* out = y + (long)fb * P + p0;
            _mm256_storeu_ps(out + 0 * (long)P, _mm256_permute2f128_ps(v0, v4, 0x20));
            _mm256_storeu_ps(out + 1 * (long)P, _mm256_permute2f128_ps(v1, v5, 0x20));
            _mm256_storeu_ps(out + 2 * (long)P, _mm256_permute2f128_ps(v2, v6, 0x20));
            _mm256_storeu_ps(out + 3 * (long)P, _mm256_permute2f128_ps(v3, v7, 0x20));
            _mm256_storeu_ps(out + 4 * (long)P, _mm256_permute2f128_ps(v0, v4, 0x31));
            _mm256_storeu_ps(out + 5 * (long)P, _mm256_permute2f128_ps(v1, v5, 0x31));
            _mm256_storeu_ps(out + 6 * (long)P, _mm256_permute2f128_ps(v2, v6, 0x31));
            _mm256_storeu_ps(out + 7 * (long)P, _mm256_permute2f128_ps(v3, v7, 0x31));
        }
    }
}

/* One image's bottom b (C, H, W) from its top g (F, oh, ow) and Wr, the
   weights as (kh*kw, F, C), through hwc, an (H, W, C) scratch image.
   C % 16 == 0. */
__attribute__((target("avx2,fma")))
static void convae_direct_grad_inputs(const float* g, const float* Wr, float* b,
                                      float* hwc, int C, int H, int W, int F,
                                      int kh, int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow;
    {
        memset(hwc, 0, (size_t)H * W * C * sizeof(float));
        for (int p0 = 0; p0 < P; p0 += CONVAE_PIXELS) {
            int row[CONVAE_PIXELS], col[CONVAE_PIXELS];
            const int real = convae_block(p0, P, ow, W, row, col);
            const int last = p0 + real - 1;
            for (int ij = 0; ij < kh * kw; ij++) {
                const int i = ij / kw, j = ij % kw;
                for (int cb = 0; cb < C; cb += 16) {
                    __m256 acc[CONVAE_PIXELS][2];
                    for (int t = 0; t < CONVAE_PIXELS; t++)
                        acc[t][0] = acc[t][1] = _mm256_setzero_ps();
                    for (int f = 0; f < F; f++) {
                        const float* w = Wr + ((long)ij * F + f) * C + cb;
                        const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8);
                        const float* s = g + (long)f * P;
                        CONVAE_STEP(0, s + p0)
                        CONVAE_STEP(1, s + (p0 + 1 < last ? p0 + 1 : last))
                        CONVAE_STEP(2, s + (p0 + 2 < last ? p0 + 2 : last))
                        CONVAE_STEP(3, s + (p0 + 3 < last ? p0 + 3 : last))
                        CONVAE_STEP(4, s + (p0 + 4 < last ? p0 + 4 : last))
                        CONVAE_STEP(5, s + (p0 + 5 < last ? p0 + 5 : last))
                    }
                    float* d = hwc + ((long)i * W + j) * C + cb;
                    CONVAE_ADD(0) CONVAE_ADD(1) CONVAE_ADD(2)
                    CONVAE_ADD(3) CONVAE_ADD(4) CONVAE_ADD(5)
                }
            }
        }
        for (int c = 0; c < C; c++)
            for (int q = 0; q < H * W; q++)
                b[(long)c * H * W + q] = hwc[(long)q * C + c];
    }
}

/* Add images [0, nb) of bottom (nb, C, H, W) and topT (nb, P, F), the
   top images transposed, into dW (K, F), the gradient for the weights
   transposed: dW[k][f] += sum over n, p of topT[n][p][f] * bottom at kofs[k]
   + the offset of p. Six k at a time, over all pixels of all nb images.
   F % 16 == 0. */
__attribute__((target("avx2,fma")))
static void convae_direct_grad_weights(const float* bottom, const float* topT,
                                       const int* kofs, float* dW, int nb, int C,
                                       int H, int W, int F, int kh, int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow, K = C * kh * kw;
    for (int k0 = 0; k0 < K; k0 += CONVAE_PIXELS) {
        int ks[CONVAE_PIXELS];
        const int real = K - k0 < CONVAE_PIXELS ? K - k0 : CONVAE_PIXELS;
        for (int t = 0; t < CONVAE_PIXELS; t++)
            ks[t] = kofs[k0 + (t < real ? t : real - 1)];
        for (int fb = 0; fb < F; fb += 16) {
            __m256 acc[CONVAE_PIXELS][2];
            for (int t = 0; t < CONVAE_PIXELS; t++)
                acc[t][0] = acc[t][1] = _mm256_setzero_ps();
            for (int n = 0; n < nb; n++) {
                const float* x = bottom + (long)n * C * H * W;
                const float* g = topT + (long)n * P * F + fb;
                for (int y = 0; y < oh; y++)
                    for (int x_ = 0; x_ < ow; x_++) {
                        const float* s = x + y * W + x_;
                        const float* w = g + (long)(y * ow + x_) * F;
                        const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8);
                        CONVAE_STEP(0, s + ks[0]) CONVAE_STEP(1, s + ks[1])
                        CONVAE_STEP(2, s + ks[2]) CONVAE_STEP(3, s + ks[3])
                        CONVAE_STEP(4, s + ks[4]) CONVAE_STEP(5, s + ks[5])
                    }
            }
            float result[CONVAE_PIXELS][16];
            convae_store_block(acc, result);
            for (int t = 0; t < real; t++)
                for (int f = 0; f < 16; f++)
                    dW[(long)(k0 + t) * F + fb + f] += result[t][f];
        }
    }
}

/* The three correlations with the direct kernels (their shape conditions
   met): one image per OpenMP iteration for the forward correlation and the
   gradient for the inputs; for the weights, chunks of images per thread
   summed into per-thread gradients. */
static int convae_corr_direct(int direction, const float* a, const float* b, float* out,
                              int N, int C, int H, int W, int F, int kh, int kw)
{
    const int P = (H - kh + 1) * (W - kw + 1), K = C * kh * kw;
    const int threads = convae_max_threads();
    /* Weights rearranged (directions 0, 1) or per-thread sums (direction 2). */
    const size_t wsize = (size_t)K * F * (direction == 2 ? threads : 1);
    float* w = (float*)calloc(wsize, sizeof(float));
    int* kofs = (int*)malloc((size_t)K * sizeof(int));
    if (w == NULL || kofs == NULL) { free(w); free(kofs); return -1; }
    for (int f = 0; f < F; f++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < kh; i++)
                for (int j = 0; j < kw; j++) {
                    const int k = (c * kh + i) * kw + j;
                    if (direction == 0)
                        w[(long)k * F + f] = b[(long)f * K + k];
                    else if (direction == 1)
                        w[((long)(i * kw + j) * F + f) * C + c] = a[(long)f * K + k];
                    kofs[k] = (c * H + i) * W + j;
                }
    /* For the weights: chunks of images whose inputs fit in a core's L2. */
    int nb = (int)((256L << 10) / (((long)C * H * W + (long)P * F) * sizeof(float)));
    nb = nb < 1 ? 1 : nb;
    const int steps = direction == 2 ? (N + nb - 1) / nb : N;
    int failed = 0;
    #pragma omp parallel
    {
        const size_t scratch = direction == 1 ? (size_t)H * W * C
                             : (direction == 2 ? (size_t)nb * P * F : 0);
        float* tmp = scratch ? (float*)malloc(scratch * sizeof(float)) : NULL;
        #pragma omp for schedule(static)
        for (int step = 0; step < steps; step++) {
            if (scratch && tmp == NULL) {
                failed = 1;
            } else if (direction == 0) {
                (K < 64 && P % 8 == 0 ? convae_direct_forward_short : convae_direct_forward)(
                    a + (long)step * C * H * W, w, kofs, out + (long)step * F * P,
                    C, H, W, F, kh, kw);
            } else if (direction == 1) {
                convae_direct_grad_inputs(b + (long)step * F * P, w,
                                          out + (long)step * C * H * W,
                                          tmp, C, H, W, F, kh, kw);
            } else {
                const int n0 = step * nb, m = N - n0 < nb ? N - n0 : nb;
                for (int n = 0; n < m; n++)
                    for (int f = 0; f < F; f++)
                        for (int p = 0; p < P; p++)
                            tmp[((long)n * P + p) * F + f] = b[((long)(n0 + n) * F + f) * P + p];
                convae_direct_grad_weights(a + (long)n0 * C * H * W, tmp, kofs,
                                           w + (long)convae_thread_num() * K * F,
                                           m, C, H, W, F, kh, kw);
            }
        }
        free(tmp);
    }
    if (direction == 2)
        for (int f = 0; f < F; f++)
            for (int k = 0; k < K; k++) {
                float sum = 0;
                for (int t = 0; t < threads; t++)
                    sum += w[((long)t * K + k) * F + f];
                out[(long)f * K + k] = sum;
            }
    free(w);
    free(kofs);
    return failed ? -1 : 0;
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
    if ((direction != 1 ? F % 16 == 0 : C % 16 == 0)
            && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return convae_corr_direct(direction, a, b, out, N, C, H, W, F, kh, kw);
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
    """One of CorrMM's three valid, stride-1 float32 correlations, by direct kernels or BLAS.

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
