/* Direct AVX2 + FMA kernels for BatchedCorr (see corr.c), for 16 filters
   (forward, gradient for the weights) or 16 input channels (gradient for the
   inputs) at a time: the 16 results for each of CONVAE_PIXELS output pixels
   stay in 12 AVX registers while the sum runs, each step multiplying one
   broadcast input value by two 8-float vectors of weights. No unrolled copy
   of the input is made. Called only where the CPU has AVX2 and FMA. */
#include <immintrin.h>

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

/* Pixel block starting at p0: row and column of its pixels in an output map
   of width ow; a short last block repeats its last pixel. Returns the number
   of real pixels. */
static int convae_block(int p0, int P, int ow, int* row, int* col)
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
static void convae_avx2_forward(const float* x, const float* Wt, const int* kofs,
                                float* y, int C, int H, int W, int F, int kh, int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow, K = C * kh * kw;
    for (int p0 = 0; p0 < P; p0 += CONVAE_PIXELS) {
        int row[CONVAE_PIXELS], col[CONVAE_PIXELS], off[CONVAE_PIXELS];
        const int real = convae_block(p0, P, ow, row, col);
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

/* The forward correlation for a short sum (few input channels: K < 64),
   where storing 6 pixels x 16 filters one value at a time would cost as much
   as the sum: 8 pixels x 8 filters of sums in registers, transposed in
   registers at the end so that each filter's 8 pixels go out as one vector.
   Same arguments as convae_avx2_forward; F % 8 == 0, P % 8 == 0. */
__attribute__((target("avx2,fma")))
static void convae_avx2_forward_short(const float* x, const float* Wt, const int* kofs,
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
static void convae_avx2_grad_inputs(const float* g, const float* Wr, float* b,
                                    float* hwc, int C, int H, int W, int F,
                                    int kh, int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow;
    memset(hwc, 0, (size_t)H * W * C * sizeof(float));
    for (int p0 = 0; p0 < P; p0 += CONVAE_PIXELS) {
        int row[CONVAE_PIXELS], col[CONVAE_PIXELS];
        const int real = convae_block(p0, P, ow, row, col);
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

/* Add images [0, nb) of bottom (nb, C, H, W) and topT (nb, P, F), the
   top images transposed, into dW (K, F), the gradient for the weights
   transposed: dW[k][f] += sum over n, p of topT[n][p][f] * bottom at kofs[k]
   + the offset of p. Six k at a time, over all pixels of all nb images.
   F % 16 == 0. */
__attribute__((target("avx2,fma")))
static void convae_avx2_grad_weights(const float* bottom, const float* topT,
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

/* The lanes of an 8-float vector below count (count <= 0: none, >= 8: all),
   as the mask _mm256_maskload_ps takes. */
__attribute__((target("avx2")))
static inline __m256i convae_lanes_below(int count)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* The sum of an 8-float vector's lanes. */
__attribute__((target("avx2")))
static inline float convae_sum_lanes(__m256 v)
{
    const __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
    return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
}

/* As convae_avx512_grad_weights_rows with 8-float vectors, for rows of 16
   pixels or more: the sums of 2 filters x 5 taps in 10 of the 16 ymm
   registers. Reads top (nb, F, P) in place. F % 2 == 0. */
__attribute__((target("avx2,fma")))
static void convae_avx2_grad_weights_rows(const float* bottom, const float* top,
                                          const int* kofs, float* dW, int nb, int C,
                                          int H, int W, int F, int kh, int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow, K = C * kh * kw;
    for (int f0 = 0; f0 < F; f0 += 2)
        for (int k0 = 0; k0 < K; k0 += 5) {
            int ks[5];
            const int real = K - k0 < 5 ? K - k0 : 5;
            for (int t = 0; t < 5; t++)
                ks[t] = kofs[k0 + (t < real ? t : real - 1)];
            __m256 acc[2][5];
            for (int f = 0; f < 2; f++)
                for (int t = 0; t < 5; t++)
                    acc[f][t] = _mm256_setzero_ps();
            for (int n = 0; n < nb; n++) {
                const float* x = bottom + (long)n * C * H * W;
                const float* g = top + ((long)n * F + f0) * P;
                for (int y = 0; y < oh; y++)
                    for (int x0 = 0; x0 < ow; x0 += 8) {
                        const __m256i lanes = convae_lanes_below(ow - x0);
                        const float* s = x + y * W + x0;
                        const float* gr = g + y * ow + x0;
                        const __m256 top0 = _mm256_maskload_ps(gr, lanes);
                        const __m256 top1 = _mm256_maskload_ps(gr + P, lanes);
                        for (int t = 0; t < 5; t++) {
                            const __m256 v = _mm256_maskload_ps(s + ks[t], lanes);
                            acc[0][t] = _mm256_fmadd_ps(top0, v, acc[0][t]);
                            acc[1][t] = _mm256_fmadd_ps(top1, v, acc[1][t]);
                        }
                    }
            }
            /* Constant indices only, so that acc stays in registers. */
            float sums[5][2];
            for (int t = 0; t < 5; t++)
                for (int f = 0; f < 2; f++)
                    sums[t][f] = convae_sum_lanes(acc[f][t]);
            for (int t = 0; t < real; t++)
                for (int f = 0; f < 2; f++)
                    dW[(long)(k0 + t) * F + f0 + f] += sums[t][f];
        }
}

/* The second pass of the scatter kernels (this file's and corr_avx512.c's):
   col (KH*KW, P), each tap's sums for every top pixel, added into the
   image (H, W) tap after tap, row by row. */
template <int KH, int KW>
static void convae_add_taps(const float* col, float* image, int H, int W)
{
    const int oh = H - KH + 1, ow = W - KW + 1, P = oh * ow;
    for (int k = 0; k < KH * KW; k++)
        for (int y = 0; y < oh; y++) {
            float* d = image + (y + k / KW) * W + k % KW;
            const float* s = col + (long)k * P + y * ow;
            for (int x = 0; x < ow; x++)
                d[x] += s[x];
        }
}

/* As convae_avx512_grad_inputs_scatter, with 16 top pixels in two ymm
   registers: the sums of 5 taps at a time in 10 of the 16 registers, so
   that each step loads 7 values for 10 FMAs (13 taps of 8 pixels, as many
   as the registers hold, would load 14 for 13). */
template <int KH, int KW>
__attribute__((target("avx2,fma")))
static void convae_avx2_grad_inputs_scatter(const float* g, const float* Wr, float* b,
                                            float* col, int C, int H, int W, int F)
{
    enum { TAPS = KH * KW, PER_PASS = 5 };
    const int oh = H - KH + 1, ow = W - KW + 1, P = oh * ow;
    memset(b, 0, (size_t)C * H * W * sizeof(float));
    for (int c = 0; c < C; c++) {
        for (int p0 = 0; p0 < P; p0 += 16) {
            const __m256i first = convae_lanes_below(P - p0);
            const __m256i second = convae_lanes_below(P - p0 - 8);
            for (int k0 = 0; k0 < TAPS; k0 += PER_PASS) {
                __m256 acc[PER_PASS][2];
                for (int t = 0; t < PER_PASS; t++)
                    acc[t][0] = acc[t][1] = _mm256_setzero_ps();
                for (int f = 0; f < F; f++) {
                    const float* top = g + (long)f * P + p0;
                    const __m256 v0 = _mm256_maskload_ps(top, first);
                    const __m256 v1 = _mm256_maskload_ps(top + 8, second);
                    _mm_prefetch((const char*)(top + 32), _MM_HINT_T0);
                    const float* w = Wr + ((long)k0 * F + f) * C + c;
                    #pragma GCC unroll 8
                    for (int t = 0; t < PER_PASS; t++)
                        if (k0 + t < TAPS) {
                            const __m256 wt = _mm256_set1_ps(w[(long)t * F * C]);
                            acc[t][0] = _mm256_fmadd_ps(v0, wt, acc[t][0]);
                            acc[t][1] = _mm256_fmadd_ps(v1, wt, acc[t][1]);
                        }
                }
                #pragma GCC unroll 8
                for (int t = 0; t < PER_PASS; t++)
                    if (k0 + t < TAPS) {
                        float* out = col + (long)(k0 + t) * P + p0;
                        _mm256_maskstore_ps(out, first, acc[t][0]);
                        _mm256_maskstore_ps(out + 8, second, acc[t][1]);
                    }
            }
        }
        convae_add_taps<KH, KW>(col, b + (long)c * H * W, H, W);
    }
}
