/* BatchedCorr's direct kernels (see corr.c), written once for any vector
   width: BatchedCorr's C has this file twice, after corr_avx2.c and after
   corr_avx512.c, each of which opens a `#pragma GCC target` region and
   defines the vocabulary below; the end of this file closes the region and
   forgets the vocabulary. So the AVX2 and AVX-512 kernels are the same code,
   and the same sums in the same order as each width had in a file of its own.

   The vocabulary, for one instruction set (ISA):
   - CONVAE_ISA(name): name with the ISA's suffix (convae_forward_avx2);
   - CONVAE_LANES: floats per vector, V; a block of channels is 2 V of them,
     two vectors;
   - CONVAE_PIXELS, CONVAE_EACH_PIXEL(M): pixels (or taps) per block, and
     M(0) M(1) ... for each: the sums are written out pixel by pixel, as
     indexing them with a variable would make gcc keep them in memory;
   - CONVAE_ROWS_FILTERS: filters per pass of the by-rows weight gradient;
   - CONVAE_SCATTER_TAPS: at most this many taps per pass of the scatter
     kernel (2 of its registers each);
   - CONVAE_VEC, CONVAE_MASK: the vector and lane-mask types;
   - CONVAE_ZERO(), CONVAE_LOAD(p), CONVAE_STORE(p, v), CONVAE_ADD(a, b),
     CONVAE_FMADD(a, b, c) (a * b + c), CONVAE_BROADCAST(p) (*p in every
     lane), CONVAE_LANES_BELOW(count), CONVAE_MASK_LOAD(mask, p) (lanes off
     the mask read as 0), CONVAE_MASK_STORE(mask, p, v), CONVAE_SUM(v) (the
     sum of the lanes). */

/* The 2 V sums of pixel t: one broadcast input value times two weight vectors. */
#define CONVAE_STEP(t, value)                                              \
    {                                                                      \
        const CONVAE_VEC v_ = CONVAE_BROADCAST(value);                     \
        acc[t][0] = CONVAE_FMADD(v_, w0, acc[t][0]);                       \
        acc[t][1] = CONVAE_FMADD(v_, w1, acc[t][1]);                       \
    }
#define CONVAE_STEP_AT(t) CONVAE_STEP(t, CONVAE_AT(t))

/* Add pixel t's 2 V sums into the (H, W, C) image at d + its offset. */
#define CONVAE_ADD_PIXEL(t)                                                \
    if (t < real) {                                                        \
        float* e_ = d + ((long)row[t] * W + col[t]) * C;                   \
        CONVAE_STORE(e_, CONVAE_ADD(CONVAE_LOAD(e_), acc[t][0]));          \
        CONVAE_STORE(e_ + CONVAE_LANES,                                    \
                     CONVAE_ADD(CONVAE_LOAD(e_ + CONVAE_LANES), acc[t][1]));\
    }

static inline void CONVAE_ISA(convae_zero_block)(CONVAE_VEC acc[CONVAE_PIXELS][2])
{
    for (int t = 0; t < CONVAE_PIXELS; t++)
        acc[t][0] = acc[t][1] = CONVAE_ZERO();
}

/* The accumulators to memory, with constant indices only. */
static inline void CONVAE_ISA(convae_store_block)(CONVAE_VEC acc[CONVAE_PIXELS][2],
                                                  float result[CONVAE_PIXELS][2 * CONVAE_LANES])
{
    for (int t = 0; t < CONVAE_PIXELS; t++) {
        CONVAE_STORE(result[t], acc[t][0]);
        CONVAE_STORE(result[t] + CONVAE_LANES, acc[t][1]);
    }
}

/* Pixel block starting at p0: row and column of its pixels in an output map
   of width ow; a short last block repeats its last pixel. Returns the number
   of real pixels. */
static int CONVAE_ISA(convae_block)(int p0, int P, int ow, int* row, int* col)
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
   weights as (K, F), with kofs[k] the offset of (c, i, j) in x.
   F % (2 V) == 0. */
static void CONVAE_ISA(convae_forward)(const float* x, const float* Wt, const int* kofs,
                                       float* y, int C, int H, int W, int F, int kh, int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow, K = C * kh * kw;
    for (int p0 = 0; p0 < P; p0 += CONVAE_PIXELS) {
        int row[CONVAE_PIXELS], col[CONVAE_PIXELS], off[CONVAE_PIXELS];
        const int real = CONVAE_ISA(convae_block)(p0, P, ow, row, col);
        for (int t = 0; t < CONVAE_PIXELS; t++) off[t] = row[t] * W + col[t];
        for (int fb = 0; fb < F; fb += 2 * CONVAE_LANES) {
            CONVAE_VEC acc[CONVAE_PIXELS][2];
            CONVAE_ISA(convae_zero_block)(acc);
            for (int k = 0; k < K; k++) {
                const CONVAE_VEC w0 = CONVAE_LOAD(Wt + (long)k * F + fb);
                const CONVAE_VEC w1 = CONVAE_LOAD(Wt + (long)k * F + fb + CONVAE_LANES);
                const float* s = x + kofs[k];
#define CONVAE_AT(t) (s + off[t])
                CONVAE_EACH_PIXEL(CONVAE_STEP_AT)
#undef CONVAE_AT
            }
            float result[CONVAE_PIXELS][2 * CONVAE_LANES];
            CONVAE_ISA(convae_store_block)(acc, result);
            for (int f = 0; f < 2 * CONVAE_LANES; f++)
                for (int t = 0; t < real; t++)
                    y[(long)(fb + f) * P + p0 + t] = result[t][f];
        }
    }
}

/* One image's bottom b (C, H, W) from its top g (F, oh, ow) and Wr, the
   weights as (kh*kw, F, C), through hwc, an (H, W, C) scratch image.
   C % (2 V) == 0. */
static void CONVAE_ISA(convae_grad_inputs)(const float* g, const float* Wr, float* b,
                                           float* hwc, int C, int H, int W, int F,
                                           int kh, int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow;
    memset(hwc, 0, (size_t)H * W * C * sizeof(float));
    for (int p0 = 0; p0 < P; p0 += CONVAE_PIXELS) {
        int row[CONVAE_PIXELS], col[CONVAE_PIXELS], at[CONVAE_PIXELS];
        const int real = CONVAE_ISA(convae_block)(p0, P, ow, row, col);
        for (int t = 0; t < CONVAE_PIXELS; t++) at[t] = p0 + (t < real ? t : real - 1);
        for (int ij = 0; ij < kh * kw; ij++) {
            const int i = ij / kw, j = ij % kw;
            for (int cb = 0; cb < C; cb += 2 * CONVAE_LANES) {
                CONVAE_VEC acc[CONVAE_PIXELS][2];
                CONVAE_ISA(convae_zero_block)(acc);
                for (int f = 0; f < F; f++) {
                    const float* w = Wr + ((long)ij * F + f) * C + cb;
                    const CONVAE_VEC w0 = CONVAE_LOAD(w), w1 = CONVAE_LOAD(w + CONVAE_LANES);
                    const float* s = g + (long)f * P;
#define CONVAE_AT(t) (s + at[t])
                    CONVAE_EACH_PIXEL(CONVAE_STEP_AT)
#undef CONVAE_AT
                }
                float* d = hwc + ((long)i * W + j) * C + cb;
                CONVAE_EACH_PIXEL(CONVAE_ADD_PIXEL)
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
   + pofs[p]. CONVAE_PIXELS k at a time, over all pixels of all nb images, in
   one loop over p (in rows and columns, the short rows' loop overhead cost
   the post's conv2, rows of 8, a sixth of its time). F % (2 V) == 0. */
static void CONVAE_ISA(convae_grad_weights)(const float* bottom, const float* topT,
                                            const int* kofs, const int* pofs, float* dW,
                                            int nb, int C, int H, int W, int F, int kh,
                                            int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow, K = C * kh * kw;
    for (int k0 = 0; k0 < K; k0 += CONVAE_PIXELS) {
        int ks[CONVAE_PIXELS];
        const int real = K - k0 < CONVAE_PIXELS ? K - k0 : CONVAE_PIXELS;
        for (int t = 0; t < CONVAE_PIXELS; t++)
            ks[t] = kofs[k0 + (t < real ? t : real - 1)];
        for (int fb = 0; fb < F; fb += 2 * CONVAE_LANES) {
            CONVAE_VEC acc[CONVAE_PIXELS][2];
            CONVAE_ISA(convae_zero_block)(acc);
            for (int n = 0; n < nb; n++) {
                const float* x = bottom + (long)n * C * H * W;
                const float* w = topT + (long)n * P * F + fb;
                for (int p = 0; p < P; p++, w += F) {
                    const float* s = x + pofs[p];
                    const CONVAE_VEC w0 = CONVAE_LOAD(w), w1 = CONVAE_LOAD(w + CONVAE_LANES);
#define CONVAE_AT(t) (s + ks[t])
                    CONVAE_EACH_PIXEL(CONVAE_STEP_AT)
#undef CONVAE_AT
                }
            }
            float result[CONVAE_PIXELS][2 * CONVAE_LANES];
            CONVAE_ISA(convae_store_block)(acc, result);
            for (int t = 0; t < real; t++)
                for (int f = 0; f < 2 * CONVAE_LANES; f++)
                    dW[(long)(k0 + t) * F + fb + f] += result[t][f];
        }
    }
}

/* The gradient for the weights where output rows are wide (ow >= 16, as
   the post's first layer's 24): pixels in vectors, V columns of a row at a
   time (a shorter last chunk masked), the sums of CONVAE_ROWS_FILTERS
   filters x 5 taps in registers, reduced once at the end. Reads top as it
   is, (nb, F, P): no transposed copy. Adds into dW (K, F) as
   convae_grad_weights does; F % CONVAE_ROWS_FILTERS == 0. */
static void CONVAE_ISA(convae_grad_weights_rows)(const float* bottom, const float* top,
                                                 const int* kofs, float* dW, int nb, int C,
                                                 int H, int W, int F, int kh, int kw)
{
    enum { FILTERS = CONVAE_ROWS_FILTERS };
    const int oh = H - kh + 1, ow = W - kw + 1, P = oh * ow, K = C * kh * kw;
    for (int f0 = 0; f0 < F; f0 += FILTERS)
        for (int k0 = 0; k0 < K; k0 += 5) {
            int ks[5];
            const int real = K - k0 < 5 ? K - k0 : 5;
            for (int t = 0; t < 5; t++)
                ks[t] = kofs[k0 + (t < real ? t : real - 1)];
            CONVAE_VEC acc[FILTERS][5];
            for (int f = 0; f < FILTERS; f++)
                for (int t = 0; t < 5; t++)
                    acc[f][t] = CONVAE_ZERO();
            for (int n = 0; n < nb; n++) {
                const float* x = bottom + (long)n * C * H * W;
                const float* g = top + ((long)n * F + f0) * P;
                for (int y = 0; y < oh; y++)
                    for (int x0 = 0; x0 < ow; x0 += CONVAE_LANES) {
                        const CONVAE_MASK lanes = CONVAE_LANES_BELOW(ow - x0);
                        const float* s = x + y * W + x0;
                        const float* gr = g + y * ow + x0;
                        CONVAE_VEC tops[FILTERS];
                        for (int f = 0; f < FILTERS; f++)
                            tops[f] = CONVAE_MASK_LOAD(lanes, gr + (long)f * P);
                        for (int t = 0; t < 5; t++) {
                            const CONVAE_VEC v = CONVAE_MASK_LOAD(lanes, s + ks[t]);
                            for (int f = 0; f < FILTERS; f++)
                                acc[f][t] = CONVAE_FMADD(tops[f], v, acc[f][t]);
                        }
                    }
            }
            /* Constant indices only, so that acc stays in registers (with
               t < real here, gcc kept it in memory, stored every step). */
            float sums[5][FILTERS];
            for (int t = 0; t < 5; t++)
                for (int f = 0; f < FILTERS; f++)
                    sums[t][f] = CONVAE_SUM(acc[f][t]);
            for (int t = 0; t < real; t++)
                for (int f = 0; f < FILTERS; f++)
                    dW[(long)(k0 + t) * F + f0 + f] += sums[t][f];
        }
}

/* The second pass of the scatter kernel: col (KH*KW, P), each tap's sums
   for every top pixel, added into the image (H, W) tap after tap, row by row
   (added per vector, each add would read what the one before it had just
   written, and wait for it). */
template <int KH, int KW>
static void CONVAE_ISA(convae_add_taps)(const float* col, float* image, int H, int W)
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

/* The gradient for the inputs where its channels do not come in blocks of
   2 V (the post's last layer, one channel) and rows of the top are wide
   (ow >= 16), for one image and KH x KW filters, in two passes. First, for
   2 V top pixels at a time (in two vectors; consecutive pixels, so no lane
   is idle), the sums over the filters f of w[f, c, i, j] * g[f, pixel] for
   the taps (i, j) of a pass (as many as CONVAE_SCATTER_TAPS allows, spread
   evenly over the passes) in registers, each broadcast weight used for both
   vectors and the top's pixels prefetched, stored into col (KH*KW, P); then
   col added into b by convae_add_taps. With AVX2, 5 taps of 16 pixels in 10
   of the 16 registers: each step loads 7 values for 10 FMAs (13 taps of 8
   pixels, as many as the registers hold, would load 14 for 13). Wr is
   (kh*kw, F, C), as for convae_grad_inputs; col holds KH*KW*P floats;
   writes b (C, H, W). */
template <int KH, int KW>
static void CONVAE_ISA(convae_grad_inputs_scatter)(const float* g, const float* Wr, float* b,
                                                   float* col, int C, int H, int W, int F)
{
    enum {
        TAPS = KH * KW,
        PASSES = (TAPS + CONVAE_SCATTER_TAPS - 1) / CONVAE_SCATTER_TAPS,
        PER_PASS = (TAPS + PASSES - 1) / PASSES,
        BLOCK = 2 * CONVAE_LANES,
        LINES = BLOCK * (int)sizeof(float) / 64  /* cache lines of a block */
    };
    const int oh = H - KH + 1, ow = W - KW + 1, P = oh * ow;
    memset(b, 0, (size_t)C * H * W * sizeof(float));
    for (int c = 0; c < C; c++) {
        for (int p0 = 0; p0 < P; p0 += BLOCK) {
            const CONVAE_MASK first = CONVAE_LANES_BELOW(P - p0);
            const CONVAE_MASK second = CONVAE_LANES_BELOW(P - p0 - CONVAE_LANES);
            #pragma GCC unroll 2
            for (int k0 = 0; k0 < TAPS; k0 += PER_PASS) {
                CONVAE_VEC acc[PER_PASS][2];
                for (int t = 0; t < PER_PASS; t++)
                    acc[t][0] = acc[t][1] = CONVAE_ZERO();
                for (int f = 0; f < F; f++) {
                    const float* top = g + (long)f * P + p0;
                    const CONVAE_VEC v0 = CONVAE_MASK_LOAD(first, top);
                    const CONVAE_VEC v1 = CONVAE_MASK_LOAD(second, top + CONVAE_LANES);
                    /* Planes F apart are more streams than the hardware
                       prefetcher follows: fetch the pixels two blocks on. */
                    #pragma GCC unroll 2
                    for (int line = 0; line < LINES; line++)
                        _mm_prefetch((const char*)(top + 2 * BLOCK + 16 * line), _MM_HINT_T0);
                    const float* w = Wr + ((long)k0 * F + f) * C + c;
                    #pragma GCC unroll 16
                    for (int t = 0; t < PER_PASS; t++)
                        if (k0 + t < TAPS) {
                            const CONVAE_VEC wt = CONVAE_BROADCAST(w + (long)t * F * C);
                            acc[t][0] = CONVAE_FMADD(v0, wt, acc[t][0]);
                            acc[t][1] = CONVAE_FMADD(v1, wt, acc[t][1]);
                        }
                }
                #pragma GCC unroll 16
                for (int t = 0; t < PER_PASS; t++)
                    if (k0 + t < TAPS) {
                        float* out = col + (long)(k0 + t) * P + p0;
                        CONVAE_MASK_STORE(first, out, acc[t][0]);
                        CONVAE_MASK_STORE(second, out + CONVAE_LANES, acc[t][1]);
                    }
            }
        }
        CONVAE_ISA(convae_add_taps)<KH, KW>(col, b + (long)c * H * W, H, W);
    }
}

#undef CONVAE_STEP
#undef CONVAE_STEP_AT
#undef CONVAE_ADD_PIXEL
#undef CONVAE_ISA
#undef CONVAE_LANES
#undef CONVAE_PIXELS
#undef CONVAE_EACH_PIXEL
#undef CONVAE_ROWS_FILTERS
#undef CONVAE_SCATTER_TAPS
#undef CONVAE_VEC
#undef CONVAE_MASK
#undef CONVAE_ZERO
#undef CONVAE_LOAD
#undef CONVAE_STORE
#undef CONVAE_ADD
#undef CONVAE_FMADD
#undef CONVAE_BROADCAST
#undef CONVAE_LANES_BELOW
#undef CONVAE_MASK_LOAD
#undef CONVAE_MASK_STORE
#undef CONVAE_SUM
#pragma GCC pop_options
