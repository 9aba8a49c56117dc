/* The AVX2 + FMA direct kernels for BatchedCorr (see corr.c): corr_simd.c's
   kernels with 8-float vectors, for 16 channels (filters, or for the gradient
   for the inputs input channels) at a time, the 16 sums of each of 6 pixels in
   12 of the 16 ymm registers; and a forward correlation for short sums of its
   own. Everything up to the end of corr_simd.c, which follows this file, is
   compiled for AVX2 and FMA; it is called only where the CPU has both. */
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")

/* corr_simd.c's vocabulary (see there). */
#define CONVAE_ISA(name) name##_avx2
#define CONVAE_LANES 8
#define CONVAE_PIXELS 6
#define CONVAE_EACH_PIXEL(M) M(0) M(1) M(2) M(3) M(4) M(5)
#define CONVAE_ROWS_FILTERS 2
#define CONVAE_SCATTER_TAPS 5
#define CONVAE_VEC __m256
#define CONVAE_MASK __m256i
#define CONVAE_ZERO() _mm256_setzero_ps()
#define CONVAE_LOAD(p) _mm256_loadu_ps(p)
#define CONVAE_STORE(p, v) _mm256_storeu_ps(p, v)
#define CONVAE_ADD(a, b) _mm256_add_ps(a, b)
#define CONVAE_FMADD(a, b, c) _mm256_fmadd_ps(a, b, c)
#define CONVAE_BROADCAST(p) _mm256_broadcast_ss(p)
#define CONVAE_LANES_BELOW(count) convae_lanes_below_avx2(count)
#define CONVAE_MASK_LOAD(mask, p) _mm256_maskload_ps(p, mask)
#define CONVAE_MASK_STORE(mask, p, v) _mm256_maskstore_ps(p, mask, v)
#define CONVAE_SUM(v) convae_sum_lanes_avx2(v)

/* The lanes of an 8-float vector below count (count <= 0: none, >= 8: all),
   as _mm256_maskload_ps takes them. */
static inline __m256i convae_lanes_below_avx2(int count)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* The sum of an 8-float vector's lanes. */
static inline float convae_sum_lanes_avx2(__m256 v)
{
    const __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
    return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
}

/* The forward correlation for a short sum (few input channels: K < 64),
   where storing 6 pixels x 16 filters one value at a time would cost as much
   as the sum: 8 pixels x 8 filters of sums in registers, transposed in
   registers at the end so that each filter's 8 pixels go out as one vector.
   Same arguments as convae_forward_avx2; F % 8 == 0, P % 8 == 0. */
static void convae_forward_short_avx2(const float* x, const float* Wt, const int* kofs,
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
