/* The AVX-512 direct kernels for BatchedCorr (see corr.c): corr_simd.c's
   kernels with 16-float vectors, for 32 channels (filters, or for the
   gradient for the inputs input channels) at a time, the 32 sums of each of
   8 pixels in 16 of the 32 zmm registers; and a forward correlation for wide
   output rows of its own. Everything up to the end of corr_simd.c, which
   follows this file, is compiled for AVX-512F; it is called only where the
   CPU has it. */

#pragma GCC push_options
#pragma GCC target("avx512f")

/* corr_simd.c's vocabulary (see there). Pixels (or taps) per block: 8, in 16
   accumulators, against 12 in 24: 1.5 ms against 2.5 for the post's conv2
   forward (Xeon 6/207, 2 threads), 1.8 against 3.1 for its input gradient;
   8 also divides the 64 pixels of its 8x8 maps, where 12 left a third of the
   last block idle. */
#define CONVAE_ISA(name) name##_avx512
#define CONVAE_LANES 16
#define CONVAE_PIXELS 8
#define CONVAE_EACH_PIXEL(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)
#define CONVAE_ROWS_FILTERS 4
#define CONVAE_SCATTER_TAPS 13
#define CONVAE_VEC __m512
#define CONVAE_MASK __mmask16
#define CONVAE_ZERO() _mm512_setzero_ps()
#define CONVAE_LOAD(p) _mm512_loadu_ps(p)
#define CONVAE_STORE(p, v) _mm512_storeu_ps(p, v)
#define CONVAE_ADD(a, b) _mm512_add_ps(a, b)
#define CONVAE_FMADD(a, b, c) _mm512_fmadd_ps(a, b, c)
#define CONVAE_BROADCAST(p) _mm512_set1_ps(*(p))
#define CONVAE_LANES_BELOW(count) convae_lanes_below_avx512(count)
#define CONVAE_MASK_LOAD(mask, p) _mm512_maskz_loadu_ps(mask, p)
#define CONVAE_MASK_STORE(mask, p, v) _mm512_mask_storeu_ps(p, mask, v)
#define CONVAE_SUM(v) _mm512_reduce_add_ps(v)

/* The lanes of a 16-float vector below count (count <= 0: none, >= 16:
   all), as the masked loads and stores take them. */
static inline __mmask16 convae_lanes_below_avx512(int count)
{
    return count >= 16 ? (__mmask16)0xFFFF
         : count > 0 ? (__mmask16)((1u << count) - 1) : (__mmask16)0;
}

/* The forward correlation where output rows are wide (ow >= 16, as the
   post's first layer's 24), for one image: pixels in vectors, two chunks of
   16 columns of a row (a shorter or empty chunk masked), the sums of 8
   filters for both in 16 registers, stored straight into y (F, oh, ow) with
   no transposing. Same arguments as convae_forward_avx512; F % 8 == 0. */
static void convae_forward_rows_avx512(const float* x, const float* Wt, const int* kofs,
                                       float* y, int C, int H, int W, int F,
                                       int kh, int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow, K = C * kh * kw;
    for (int r = 0; r < oh; r++)
        for (int x0 = 0; x0 < ow; x0 += 32) {
            const __mmask16 first = convae_lanes_below_avx512(ow - x0);
            const __mmask16 second = convae_lanes_below_avx512(ow - x0 - 16);
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

/* The gradient for the inputs of one image, where its channels come in 32s
   (as convae_grad_inputs_avx512, which computes the same sums in another
   order), for KW-wide filters. For each top row, 8 pixels at a time, and
   each filter row i, the 8 + KW - 1 bottom pixels they reach in row r + i
   hold the sums of 32 channels in 2 (8 + KW - 1) registers (24 of the 32
   for 5 taps) over all filters and the KW taps of the row, and are added
   into the (H, W, C) scratch image hwc once: convae_grad_inputs_avx512
   adds every tap's sums of 8 pixels into hwc, after only F filters' worth
   of work each, and ran 1.12-1.25x as long as the forward correlation of
   the same shape; this runs 0.90-1.02x in a C harness, and in Theano 0.82-
   0.88x as long as that kernel (conv2 of the post, Xeon 6/207, 2 threads,
   alternating). The 8 pixels' top values of every
   filter are first copied into gtop (F x 8, zero past the row's end). Wr is
   (kh*KW, F, C), as for convae_grad_inputs_avx512; writes b (C, H, W). */
#define CONVAE_INPUT_ROW_PIXELS 8
template <int KW>
static void convae_grad_inputs_rows_avx512(const float* g, const float* Wr, float* b,
                                           float* hwc, float* gtop, int C, int H, int W,
                                           int F, int kh)
{
    enum { PIXELS = CONVAE_INPUT_ROW_PIXELS, REACH = PIXELS + KW - 1 };
    const int oh = H - kh + 1, ow = W - KW + 1, P = oh * ow;
    memset(hwc, 0, (size_t)H * W * C * sizeof(float));
    for (int r = 0; r < oh; r++)
        for (int x0 = 0; x0 < ow; x0 += PIXELS) {
            const int real = ow - x0 < PIXELS ? ow - x0 : PIXELS;
            for (int f = 0; f < F; f++)
                for (int t = 0; t < PIXELS; t++)
                    gtop[f * PIXELS + t] = t < real ? g[(long)f * P + r * ow + x0 + t] : 0.0f;
            for (int cb = 0; cb < C; cb += 32)
                for (int i = 0; i < kh; i++) {
                    __m512 acc[REACH][2];
                    #pragma GCC unroll 16
                    for (int x = 0; x < REACH; x++)
                        acc[x][0] = acc[x][1] = _mm512_setzero_ps();
                    for (int f = 0; f < F; f++) {
                        const float* top = gtop + f * PIXELS;
                        const float* w = Wr + ((long)i * KW * F + f) * C + cb;
                        #pragma GCC unroll 8
                        for (int j = 0; j < KW; j++) {
                            const __m512 w0 = _mm512_loadu_ps(w + (long)j * F * C);
                            const __m512 w1 = _mm512_loadu_ps(w + (long)j * F * C + 16);
                            #pragma GCC unroll 8
                            for (int t = 0; t < PIXELS; t++) {
                                const __m512 v = _mm512_set1_ps(top[t]);
                                acc[t + j][0] = _mm512_fmadd_ps(v, w0, acc[t + j][0]);
                                acc[t + j][1] = _mm512_fmadd_ps(v, w1, acc[t + j][1]);
                            }
                        }
                    }
                    float* d = hwc + ((long)(r + i) * W + x0) * C + cb;
                    #pragma GCC unroll 16
                    for (int x = 0; x < REACH; x++)
                        if (x < real + KW - 1) {
                            float* e = d + (long)x * C;
                            _mm512_storeu_ps(e, _mm512_add_ps(_mm512_loadu_ps(e), acc[x][0]));
                            _mm512_storeu_ps(e + 16,
                                             _mm512_add_ps(_mm512_loadu_ps(e + 16), acc[x][1]));
                        }
                }
        }
    for (int c = 0; c < C; c++)
        for (int q = 0; q < H * W; q++)
            b[(long)c * H * W + q] = hwc[(long)q * C + c];
}
