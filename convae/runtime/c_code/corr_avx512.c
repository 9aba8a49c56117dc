/* Direct AVX-512 kernels for BatchedCorr (see corr.c), the 512-bit versions
   of corr_avx2.c's: 32 filters (forward, gradient for the weights) or 32
   input channels (gradient for the inputs) at a time, the 32 sums of each of
   CONVAE_PIXELS_512 output pixels in two zmm registers (16 of the 32), each
   step multiplying one broadcast input value by two 16-float vectors of
   weights. Called only where the CPU has AVX-512F. */

/* Pixels (or taps) per block. 8, in 16 accumulators, against 12 in 24: 1.5 ms
   against 2.5 for the post's conv2 forward (Xeon 6/207, 2 threads), 1.8
   against 3.1 for its input gradient; 8 also divides the 64 pixels of its
   8x8 maps, where 12 left a third of the last block idle. */
#define CONVAE_PIXELS_512 8

/* The lanes of a 16-float vector below count (count <= 0: none, >= 16:
   all), as the masked loads and stores take them. */
static inline __mmask16 convae_lanes_below_512(int count)
{
    return count >= 16 ? (__mmask16)0xFFFF
         : count > 0 ? (__mmask16)((1u << count) - 1) : (__mmask16)0;
}

#define CONVAE_STEP_512(t, value)                                          \
    {                                                                      \
        const __m512 v_ = _mm512_set1_ps(*(value));                        \
        acc[t][0] = _mm512_fmadd_ps(v_, w0, acc[t][0]);                    \
        acc[t][1] = _mm512_fmadd_ps(v_, w1, acc[t][1]);                    \
    }

#define CONVAE_STEPS_512(offset)                                           \
    CONVAE_STEP_512(0, offset(0)) CONVAE_STEP_512(1, offset(1))            \
    CONVAE_STEP_512(2, offset(2)) CONVAE_STEP_512(3, offset(3))            \
    CONVAE_STEP_512(4, offset(4)) CONVAE_STEP_512(5, offset(5))            \
    CONVAE_STEP_512(6, offset(6)) CONVAE_STEP_512(7, offset(7))

/* Add pixel t's 32 sums into the (H, W, C) image at d + its offset. */
#define CONVAE_ADD_512(t)                                                  \
    if (t < real) {                                                        \
        float* e_ = d + ((long)row[t] * W + col[t]) * C;                   \
        _mm512_storeu_ps(e_, _mm512_add_ps(_mm512_loadu_ps(e_), acc[t][0]));\
        _mm512_storeu_ps(e_ + 16, _mm512_add_ps(_mm512_loadu_ps(e_ + 16), acc[t][1]));\
    }

/* The accumulators to memory, with constant indices only (see corr_avx2.c). */
__attribute__((target("avx512f")))
static inline void convae_store_block_512(__m512 acc[CONVAE_PIXELS_512][2],
                                          float result[CONVAE_PIXELS_512][32])
{
    for (int t = 0; t < CONVAE_PIXELS_512; t++) {
        _mm512_storeu_ps(result[t], acc[t][0]);
        _mm512_storeu_ps(result[t] + 16, acc[t][1]);
    }
}

__attribute__((target("avx512f")))
static inline void convae_zero_block_512(__m512 acc[CONVAE_PIXELS_512][2])
{
    for (int t = 0; t < CONVAE_PIXELS_512; t++)
        acc[t][0] = acc[t][1] = _mm512_setzero_ps();
}

/* Pixel block starting at p0, as convae_block for CONVAE_PIXELS_512 pixels. */
static int convae_block_512(int p0, int P, int ow, int* row, int* col)
{
    const int real = P - p0 < CONVAE_PIXELS_512 ? P - p0 : CONVAE_PIXELS_512;
    for (int t = 0; t < CONVAE_PIXELS_512; t++) {
        const int p = p0 + (t < real ? t : real - 1);
        row[t] = p / ow;
        col[t] = p % ow;
    }
    return real;
}

/* As convae_avx2_forward; F % 32 == 0. */
__attribute__((target("avx512f")))
static void convae_avx512_forward(const float* x, const float* Wt, const int* kofs,
                                  float* y, int C, int H, int W, int F, int kh, int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow, K = C * kh * kw;
    for (int p0 = 0; p0 < P; p0 += CONVAE_PIXELS_512) {
        int row[CONVAE_PIXELS_512], col[CONVAE_PIXELS_512], off[CONVAE_PIXELS_512];
        const int real = convae_block_512(p0, P, ow, row, col);
        for (int t = 0; t < CONVAE_PIXELS_512; t++) off[t] = row[t] * W + col[t];
        for (int fb = 0; fb < F; fb += 32) {
            __m512 acc[CONVAE_PIXELS_512][2];
            convae_zero_block_512(acc);
            for (int k = 0; k < K; k++) {
                const __m512 w0 = _mm512_loadu_ps(Wt + (long)k * F + fb);
                const __m512 w1 = _mm512_loadu_ps(Wt + (long)k * F + fb + 16);
                const float* s = x + kofs[k];
#define CONVAE_AT(t) (s + off[t])
                CONVAE_STEPS_512(CONVAE_AT)
#undef CONVAE_AT
            }
            float result[CONVAE_PIXELS_512][32];
            convae_store_block_512(acc, result);
            for (int f = 0; f < 32; f++)
                for (int t = 0; t < real; t++)
                    y[(long)(fb + f) * P + p0 + t] = result[t][f];
        }
    }
}

/* As convae_avx2_grad_inputs; C % 32 == 0. */
__attribute__((target("avx512f")))
static void convae_avx512_grad_inputs(const float* g, const float* Wr, float* b,
                                      float* hwc, int C, int H, int W, int F,
                                      int kh, int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow;
    memset(hwc, 0, (size_t)H * W * C * sizeof(float));
    for (int p0 = 0; p0 < P; p0 += CONVAE_PIXELS_512) {
        int row[CONVAE_PIXELS_512], col[CONVAE_PIXELS_512], at[CONVAE_PIXELS_512];
        const int real = convae_block_512(p0, P, ow, row, col);
        for (int t = 0; t < CONVAE_PIXELS_512; t++) at[t] = p0 + (t < real ? t : real - 1);
        for (int ij = 0; ij < kh * kw; ij++) {
            const int i = ij / kw, j = ij % kw;
            for (int cb = 0; cb < C; cb += 32) {
                __m512 acc[CONVAE_PIXELS_512][2];
                convae_zero_block_512(acc);
                for (int f = 0; f < F; f++) {
                    const float* w = Wr + ((long)ij * F + f) * C + cb;
                    const __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16);
                    const float* s = g + (long)f * P;
#define CONVAE_AT(t) (s + at[t])
                    CONVAE_STEPS_512(CONVAE_AT)
#undef CONVAE_AT
                }
                float* d = hwc + ((long)i * W + j) * C + cb;
                CONVAE_ADD_512(0) CONVAE_ADD_512(1) CONVAE_ADD_512(2) CONVAE_ADD_512(3)
                CONVAE_ADD_512(4) CONVAE_ADD_512(5) CONVAE_ADD_512(6) CONVAE_ADD_512(7)
            }
        }
    }
    for (int c = 0; c < C; c++)
        for (int q = 0; q < H * W; q++)
            b[(long)c * H * W + q] = hwc[(long)q * C + c];
}

/* As convae_avx2_grad_weights, CONVAE_PIXELS_512 k at a time; F % 32 == 0. */
__attribute__((target("avx512f")))
static void convae_avx512_grad_weights(const float* bottom, const float* topT,
                                       const int* kofs, float* dW, int nb, int C,
                                       int H, int W, int F, int kh, int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow, K = C * kh * kw;
    for (int k0 = 0; k0 < K; k0 += CONVAE_PIXELS_512) {
        int ks[CONVAE_PIXELS_512];
        const int real = K - k0 < CONVAE_PIXELS_512 ? K - k0 : CONVAE_PIXELS_512;
        for (int t = 0; t < CONVAE_PIXELS_512; t++)
            ks[t] = kofs[k0 + (t < real ? t : real - 1)];
        for (int fb = 0; fb < F; fb += 32) {
            __m512 acc[CONVAE_PIXELS_512][2];
            convae_zero_block_512(acc);
            for (int n = 0; n < nb; n++) {
                const float* x = bottom + (long)n * C * H * W;
                const float* g = topT + (long)n * P * F + fb;
                for (int y = 0; y < oh; y++)
                    for (int x_ = 0; x_ < ow; x_++) {
                        const float* s = x + y * W + x_;
                        const float* w = g + (long)(y * ow + x_) * F;
                        const __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16);
#define CONVAE_AT(t) (s + ks[t])
                        CONVAE_STEPS_512(CONVAE_AT)
#undef CONVAE_AT
                    }
            }
            float result[CONVAE_PIXELS_512][32];
            convae_store_block_512(acc, result);
            for (int t = 0; t < real; t++)
                for (int f = 0; f < 32; f++)
                    dW[(long)(k0 + t) * F + fb + f] += result[t][f];
        }
    }
}

/* The gradient for the weights where output rows are wide (ow >= 16, as
   the post's first layer's 24): pixels in vectors, 16 columns of a row at a
   time (a shorter last chunk masked), the sums of 4 filters x 5 taps in 20
   registers, reduced once at the end. Reads top as it is, (nb, F, P): no
   transposed copy. Adds into dW (K, F) as convae_avx512_grad_weights does;
   F % 4 == 0. */
__attribute__((target("avx512f")))
static void convae_avx512_grad_weights_rows(const float* bottom, const float* top,
                                            const int* kofs, float* dW, int nb, int C,
                                            int H, int W, int F, int kh, int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow, K = C * kh * kw;
    for (int f0 = 0; f0 < F; f0 += 4)
        for (int k0 = 0; k0 < K; k0 += 5) {
            int ks[5];
            const int real = K - k0 < 5 ? K - k0 : 5;
            for (int t = 0; t < 5; t++)
                ks[t] = kofs[k0 + (t < real ? t : real - 1)];
            __m512 acc[4][5];
            for (int f = 0; f < 4; f++)
                for (int t = 0; t < 5; t++)
                    acc[f][t] = _mm512_setzero_ps();
            for (int n = 0; n < nb; n++) {
                const float* x = bottom + (long)n * C * H * W;
                const float* g = top + ((long)n * F + f0) * P;
                for (int y = 0; y < oh; y++)
                    for (int x0 = 0; x0 < ow; x0 += 16) {
                        const __mmask16 lanes = convae_lanes_below_512(ow - x0);
                        const float* s = x + y * W + x0;
                        const float* gr = g + y * ow + x0;
                        __m512 tops[4];
                        for (int f = 0; f < 4; f++)
                            tops[f] = _mm512_maskz_loadu_ps(lanes, gr + (long)f * P);
                        for (int t = 0; t < 5; t++) {
                            const __m512 v = _mm512_maskz_loadu_ps(lanes, s + ks[t]);
                            for (int f = 0; f < 4; f++)
                                acc[f][t] = _mm512_fmadd_ps(tops[f], v, acc[f][t]);
                        }
                    }
            }
            /* Constant indices only, so that acc stays in registers (with
               t < real here, gcc kept it in memory, stored every step). */
            float sums[5][4];
            for (int t = 0; t < 5; t++)
                for (int f = 0; f < 4; f++)
                    sums[t][f] = _mm512_reduce_add_ps(acc[f][t]);
            for (int t = 0; t < real; t++)
                for (int f = 0; f < 4; f++)
                    dW[(long)(k0 + t) * F + f0 + f] += sums[t][f];
        }
}

/* The forward correlation where output rows are wide (ow >= 16, as the
   post's first layer's 24), for one image: pixels in vectors, two chunks of
   16 columns of a row (a shorter or empty chunk masked), the sums of 8
   filters for both in 16 registers, stored straight into y (F, oh, ow) with
   no transposing. Same arguments as convae_avx512_forward; F % 8 == 0. */
__attribute__((target("avx512f")))
static void convae_avx512_forward_rows(const float* x, const float* Wt, const int* kofs,
                                       float* y, int C, int H, int W, int F,
                                       int kh, int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow, K = C * kh * kw;
    for (int r = 0; r < oh; r++)
        for (int x0 = 0; x0 < ow; x0 += 32) {
            const __mmask16 first = convae_lanes_below_512(ow - x0);
            const __mmask16 second = convae_lanes_below_512(ow - x0 - 16);
            const float* s = x + r * W + x0;
            float* out = y + r * ow + x0;
            for (int f0 = 0; f0 < F; f0 += 8) {
                __m512 acc[8][2];
                for (int f = 0; f < 8; f++)
                    acc[f][0] = acc[f][1] = _mm512_setzero_ps();
                for (int k = 0; k < K; k++) {
                    const __m512 v0 = _mm512_maskz_loadu_ps(first, s + kofs[k]);
                    const __m512 v1 = _mm512_maskz_loadu_ps(second, s + kofs[k] + 16);
                    const float* w = Wt + (long)k * F + f0;
                    for (int f = 0; f < 8; f++) {
                        const __m512 wf = _mm512_set1_ps(w[f]);
                        acc[f][0] = _mm512_fmadd_ps(wf, v0, acc[f][0]);
                        acc[f][1] = _mm512_fmadd_ps(wf, v1, acc[f][1]);
                    }
                }
                for (int f = 0; f < 8; f++) {
                    _mm512_mask_storeu_ps(out + (long)(f0 + f) * P, first, acc[f][0]);
                    _mm512_mask_storeu_ps(out + (long)(f0 + f) * P + 16, second, acc[f][1]);
                }
            }
        }
}

/* The gradient for the inputs where its channels do not come in 32s (the
   post's last layer, one channel) and rows of the top are wide (ow >= 16),
   for one image and KH x KW filters, in two passes. First, for 32 top pixels
   at a time (in two vectors; consecutive pixels, so no lane is idle), the
   sums over the filters f of w[f, c, i, j] * g[f, pixel] for up to 13 taps
   (i, j) in 26 registers, each broadcast weight used for both vectors and
   the top's pixels prefetched, stored into col (KH*KW, P); then col added
   into b, one tap after another (added per vector, each add would read what
   the one before it had just written, and wait for it). Wr is (kh*kw, F, C), as for
   convae_avx512_grad_inputs; col holds KH*KW*P floats; writes b (C, H, W). */
template <int KH, int KW>
__attribute__((target("avx512f")))
static void convae_avx512_grad_inputs_scatter(const float* g, const float* Wr, float* b,
                                              float* col, int C, int H, int W, int F)
{
    enum { TAPS = KH * KW, PER_PASS = TAPS <= 13 ? TAPS : (TAPS + 1) / 2 };
    const int oh = H - KH + 1, ow = W - KW + 1, P = oh * ow;
    memset(b, 0, (size_t)C * H * W * sizeof(float));
    for (int c = 0; c < C; c++) {
        for (int p0 = 0; p0 < P; p0 += 32) {
            const __mmask16 first = convae_lanes_below_512(P - p0);
            const __mmask16 second = convae_lanes_below_512(P - p0 - 16);
            #pragma GCC unroll 2
            for (int k0 = 0; k0 < TAPS; k0 += PER_PASS) {
                __m512 acc[PER_PASS][2];
                for (int t = 0; t < PER_PASS; t++)
                    acc[t][0] = acc[t][1] = _mm512_setzero_ps();
                for (int f = 0; f < F; f++) {
                    const float* top = g + (long)f * P + p0;
                    const __m512 v0 = _mm512_maskz_loadu_ps(first, top);
                    const __m512 v1 = _mm512_maskz_loadu_ps(second, top + 16);
                    /* 32 planes apart are more streams than the hardware
                       prefetcher follows: fetch the pixels two blocks on. */
                    _mm_prefetch((const char*)(top + 64), _MM_HINT_T0);
                    _mm_prefetch((const char*)(top + 80), _MM_HINT_T0);
                    const float* w = Wr + ((long)k0 * F + f) * C + c;
                    #pragma GCC unroll 16
                    for (int t = 0; t < PER_PASS; t++)
                        if (k0 + t < TAPS) {
                            const __m512 wt = _mm512_set1_ps(w[(long)t * F * C]);
                            acc[t][0] = _mm512_fmadd_ps(v0, wt, acc[t][0]);
                            acc[t][1] = _mm512_fmadd_ps(v1, wt, acc[t][1]);
                        }
                }
                #pragma GCC unroll 16
                for (int t = 0; t < PER_PASS; t++)
                    if (k0 + t < TAPS) {
                        float* out = col + (long)(k0 + t) * P + p0;
                        _mm512_mask_storeu_ps(out, first, acc[t][0]);
                        _mm512_mask_storeu_ps(out + 16, second, acc[t][1]);
                    }
            }
        }
        convae_add_taps<KH, KW>(col, b + (long)c * H * W, H, W);
    }
}
