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
