/* Uniform samples of Theano's MRG31k3p generator (mrg_uniform; see
   convae/runtime/mrg.py), computed stream by stream and split over the cores
   with OpenMP. Sample i comes from stream i % n_streams, each stream's
   samples in order of i, so every sample and every final state is the one
   Theano's single loop gives. The arithmetic is Theano's: int32 sums that
   wrap in two's complement, each reduced by one subtraction of the modulus.
   Defines the two functions Theano's mrg_uniform calls. */
#include <stdint.h>

#define CONVAE_MRG_M1 2147483647  /* 2^31 - 1: the first component's modulus */
#define CONVAE_MRG_M2 2147462579  /* 2^31 - 21069: the second's */
#define CONVAE_MRG_MULT2 21069
/* Below this many samples one thread draws them all (a sample costs a few ns). */
#define CONVAE_MRG_PARALLEL_MIN 4096

/* Streams advanced together, their states copied into one array per value:
   a loop over them that gcc vectorises. */
#define CONVAE_MRG_BLOCK 64

/* a + b in int32, wrapping as the machine's adds do. */
static inline int32_t convae_wrap_add(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

/* v less m once where v is negative (a wrapped sum) or at least m: for m > 0
   that is one unsigned comparison, made a mask (no branch, so gcc vectorises). */
static inline int32_t convae_mrg_reduce(int32_t v, int32_t m)
{
    const uint32_t past = -(uint32_t)((uint32_t)v >= (uint32_t)m);
    return (int32_t)((uint32_t)v - ((uint32_t)m & past));
}

/* 2^15 x mod m2 as Theano computes it, before the one reduction. */
static inline int32_t convae_mrg_times_2_15(int32_t x)
{
    return (int32_t)(((uint32_t)(x & 65535) << 15)
                     + (uint32_t)CONVAE_MRG_MULT2 * (uint32_t)(x >> 16));
}

/* out[i] for i < n: samples in (0, 1] of the streams' states (n_streams x 6
   int32: three values of each component, newest first), advanced in place.
   Blocks of streams are split over the cores; a block draws its streams'
   k-th samples (contiguous in out) together, k = 0, 1, ... */
template <typename T>
static void convae_mrg_uniform(T* out, int32_t* states, npy_int64 n, int n_streams, T norm)
{
    const npy_int64 used = n < n_streams ? n : n_streams;
    const npy_int64 blocks = (used + CONVAE_MRG_BLOCK - 1) / CONVAE_MRG_BLOCK;
    #pragma omp parallel for schedule(static) if (n >= CONVAE_MRG_PARALLEL_MIN)
    for (npy_int64 b = 0; b < blocks; b++) {
        const npy_int64 first = b * CONVAE_MRG_BLOCK;
        const int count = (int)(used - first < CONVAE_MRG_BLOCK ? used - first
                                                                : CONVAE_MRG_BLOCK);
        int32_t x11[CONVAE_MRG_BLOCK], x12[CONVAE_MRG_BLOCK], x13[CONVAE_MRG_BLOCK];
        int32_t x21[CONVAE_MRG_BLOCK], x22[CONVAE_MRG_BLOCK], x23[CONVAE_MRG_BLOCK];
        int32_t* s = states + 6 * first;
        for (int j = 0; j < count; j++) {
            x11[j] = s[6 * j]; x12[j] = s[6 * j + 1]; x13[j] = s[6 * j + 2];
            x21[j] = s[6 * j + 3]; x22[j] = s[6 * j + 4]; x23[j] = s[6 * j + 5];
        }
        for (npy_int64 base = first; base < n; base += n_streams) {
            const int drawn = (int)(n - base < count ? n - base : count);
            T* o = out + base;
            for (int j = 0; j < drawn; j++) {
                /* First component: 2^22 x12 + (2^7 + 1) x13 mod m1. */
                int32_t y1 = (int32_t)(((uint32_t)(x12[j] & 511) << 22)
                                       + (uint32_t)(x12[j] >> 9)
                                       + ((uint32_t)(x13[j] & 16777215) << 7)
                                       + (uint32_t)(x13[j] >> 24));
                y1 = convae_mrg_reduce(y1, CONVAE_MRG_M1);
                y1 = convae_mrg_reduce(convae_wrap_add(y1, x13[j]), CONVAE_MRG_M1);
                x13[j] = x12[j];
                x12[j] = x11[j];
                x11[j] = y1;
                /* Second component: 2^15 x21 + (2^15 + 1) x23 mod m2. */
                const int32_t a = convae_mrg_reduce(convae_mrg_times_2_15(x21[j]),
                                                    CONVAE_MRG_M2);
                int32_t y2 = convae_mrg_reduce(convae_mrg_times_2_15(x23[j]), CONVAE_MRG_M2);
                y2 = convae_mrg_reduce(convae_wrap_add(y2, x23[j]), CONVAE_MRG_M2);
                y2 = convae_mrg_reduce(convae_wrap_add(y2, a), CONVAE_MRG_M2);
                x23[j] = x22[j];
                x22[j] = x21[j];
                x21[j] = y2;
                /* (y1 - y2) mod m1, with m1 in place of 0. */
                const int32_t d = y1 - y2;
                o[j] = (T)(d + (CONVAE_MRG_M1 & -(int32_t)(d <= 0))) * norm;
            }
        }
        for (int j = 0; j < count; j++) {
            s[6 * j] = x11[j]; s[6 * j + 1] = x12[j]; s[6 * j + 2] = x13[j];
            s[6 * j + 3] = x21[j]; s[6 * j + 4] = x22[j]; s[6 * j + 5] = x23[j];
        }
    }
}

static void cpu_rng_mrg_uniform_npy_float32(PyArrayObject* sample, PyArrayObject* rstate,
                                            npy_int64 n, int n_streams)
{
    convae_mrg_uniform<npy_float32>((npy_float32*)PyArray_DATA(sample),
                                    (int32_t*)PyArray_DATA(rstate), n, n_streams,
                                    4.6566126e-10f);
}

static void cpu_rng_mrg_uniform_npy_float64(PyArrayObject* sample, PyArrayObject* rstate,
                                            npy_int64 n, int n_streams)
{
    convae_mrg_uniform<npy_float64>((npy_float64*)PyArray_DATA(sample),
                                    (int32_t*)PyArray_DATA(rstate), n, n_streams,
                                    4.656612873077392578125e-10);
}
