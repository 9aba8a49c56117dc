/* Loops of convae's elementwise, upscaling, pooling and summing ops (see
   convae/runtime/contiguous.py), over C-contiguous float32 data, split over
   the cores with OpenMP once they are CONVAE_PARALLEL_MIN elements or more.
   Compiled as C++, as all of Theano's C code. Needs convae_ops.h. */
#include <stdint.h>

#ifdef CONVAE_VECTOR_TANHF
/* glibc 2.35 and newer have SIMD variants of tanhf (libmvec): declaring them
   lets gcc vectorise a loop of tanhf calls. */
extern "C" __attribute__((__simd__("notinbranch"))) float tanhf(float) throw();
#endif

/* Elements per OpenMP iteration of the flat loops (tanh, spreading pairs). */
#define CONVAE_FLAT_BLOCK 16384

/* out[i] = tanhf(in[i]) for i < size. */
static void convae_tanh(const float* in, float* out, npy_intp size)
{
    const npy_intp block = CONVAE_FLAT_BLOCK;
    #pragma omp parallel for schedule(static) if (size > CONVAE_PARALLEL_MIN)
    for (npy_intp start = 0; start < size; start += block) {
        const npy_intp end = start + block < size ? start + block : size;
        for (npy_intp i = start; i < end; i++)
            out[i] = tanhf(in[i]);
    }
}

enum convae_activation { CONVAE_TANH, CONVAE_RELU, CONVAE_LINEAR };

/* tanh(v), rectify as Theano and Lasagne write it (to the bit), or v. */
template <int ACTIVATION>
static inline float convae_activate(float v)
{
    return ACTIVATION == CONVAE_TANH ? tanhf(v)
         : ACTIVATION == CONVAE_RELU ? 0.5f * (v + fabsf(v)) : v;
}

/* out = activation(in + bias) for in and out (n, channels, plane) and one
   bias per channel. */
template <int ACTIVATION>
static void convae_bias_activation(const float* in, const float* bias, float* out,
                                   npy_intp n, npy_intp channels, npy_intp plane)
{
    const npy_intp planes = n * channels;
    if (plane == 1) {  /* (n, channels): one SIMD loop along each row */
        for (npy_intp i = 0; i < n; i++)
            for (npy_intp c = 0; c < channels; c++)
                out[i * channels + c] =
                    convae_activate<ACTIVATION>(in[i * channels + c] + bias[c]);
        return;
    }
    #pragma omp parallel for schedule(static) if (planes * plane > CONVAE_PARALLEL_MIN)
    for (npy_intp q = 0; q < planes; q++) {
        const float shift = bias[q % channels];
        const float* src = in + q * plane;
        float* dst = out + q * plane;
        for (npy_intp i = 0; i < plane; i++)
            dst[i] = convae_activate<ACTIVATION>(src[i] + shift);
    }
}

/* Bit patterns of floats, read through pointers to float. */
typedef uint32_t __attribute__((__may_alias__)) convae_bits32;
typedef uint64_t __attribute__((__may_alias__)) convae_bits64;

/* y[2 i] = y[2 i + 1] = x[i] for i < n: one 64-bit word holding the value's
   bits twice, a loop gcc vectorises. */
static inline void convae_spread_pairs(const float* x, float* y, npy_intp n)
{
    const convae_bits32* in = (const convae_bits32*)x;
    convae_bits64* out = (convae_bits64*)y;
    for (npy_intp i = 0; i < n; i++)
        out[i] = (uint64_t)in[i] * 0x100000001ULL;
}

/* y (outer, times, inner): every y[o, t] a copy of x[o] (outer, inner). */
static void convae_repeat(const float* x, float* y, npy_intp outer, npy_intp inner,
                          int times)
{
    if (inner == 1 && times == 2) {  /* each value twice: upscaling a row */
        const npy_intp block = CONVAE_FLAT_BLOCK;
        #pragma omp parallel for schedule(static) if (outer > CONVAE_PARALLEL_MIN)
        for (npy_intp start = 0; start < outer; start += block)
            convae_spread_pairs(x + start, y + 2 * start,
                                outer - start < block ? outer - start : block);
        return;
    }
    #pragma omp parallel for schedule(static) if (outer * inner > CONVAE_PARALLEL_MIN)
    for (npy_intp o = 0; o < outer; o++) {
        if (inner == 1) {
            for (int t = 0; t < times; t++)
                y[o * times + t] = x[o];
            continue;
        }
        for (int t = 0; t < times; t++)
            memcpy(y + (o * times + t) * inner, x + o * inner, inner * sizeof(float));
    }
}

/* y (rows, 2, 2 w): each row of x (rows, w) with every value twice, written
   twice: 2x nearest-neighbour upscaling of maps (N, C, H, W) with rows =
   N C H, in one pass (the two repeats it replaces wrote and read back a map
   of twice x's size in between). */
static void convae_upscale_2x(const float* x, float* y, npy_intp rows, npy_intp w)
{
    #pragma omp parallel for schedule(static) if (4 * rows * w > CONVAE_PARALLEL_MIN)
    for (npy_intp r = 0; r < rows; r++) {
        /* spreading twice beat spreading once and copying (0.30 against
           0.38 ms for (128, 32, 12, 12), Xeon 6/207, 2 threads) */
        convae_spread_pairs(x + r * w, y + 4 * r * w, w);
        convae_spread_pairs(x + r * w, y + (4 * r + 2) * w, w);
    }
}

/* y (outer, inner) = the sum of x (outer, length, inner) over its middle axis,
   accumulated in double. 64 sums at a time, each its own double, so that no
   sum waits for the one before: 64 inner positions of one outer index, or
   where there is one inner position (a repeat's gradient: sums of
   neighbours), 64 outer indices. Block b, element j, summand t. Two
   summands (a 2x upscaling's gradient) take plain loops instead. */
static void convae_axis_sum(const float* x, float* y, npy_intp outer, npy_intp length,
                            npy_intp inner)
{
    /* The same sums as below, (0 + first) + second, in loops gcc vectorises. */
    if (length == 2 && inner == 1) {
        #pragma omp parallel for schedule(static) if (outer > CONVAE_PARALLEL_MIN)
        for (npy_intp o = 0; o < outer; o++)
            y[o] = (float)((0.0 + x[2 * o]) + x[2 * o + 1]);
        return;
    }
    if (length == 2) {
        #pragma omp parallel for schedule(static) if (outer * inner > CONVAE_PARALLEL_MIN)
        for (npy_intp o = 0; o < outer; o++) {
            const float* first = x + o * 2 * inner;
            const float* second = first + inner;
            for (npy_intp j = 0; j < inner; j++)
                y[o * inner + j] = (float)((0.0 + first[j]) + second[j]);
        }
        return;
    }
    const npy_intp per_outer = (inner + 63) / 64;
    const npy_intp blocks = inner == 1 ? (outer + 63) / 64 : outer * per_outer;
    #pragma omp parallel for schedule(static) if (outer * length * inner > CONVAE_PARALLEL_MIN)
    for (npy_intp b = 0; b < blocks; b++) {
        const npy_intp o = inner == 1 ? b * 64 : b / per_outer;
        const npy_intp i0 = inner == 1 ? 0 : b % per_outer * 64;
        const npy_intp left = inner == 1 ? outer - o : inner - i0;
        const npy_intp n = left < 64 ? left : 64;
        const npy_intp stride_j = inner == 1 ? length : 1;
        const float* first = x + o * length * inner + i0;
        double sums[64];
        for (npy_intp j = 0; j < n; j++) sums[j] = 0;
        for (npy_intp t = 0; t < length; t++)
            for (npy_intp j = 0; j < n; j++)
                sums[j] += first[t * inner + j * stride_j];
        for (npy_intp j = 0; j < n; j++)
            y[o * inner + i0 + j] = (float)sums[j];
    }
}

/* y (channels) = the sum of x (outer, channels, inner) over all but its
   middle axis, accumulated in double, in 8 lanes (a SIMD loop). */
static void convae_channel_sum(const float* x, float* y, npy_intp outer,
                               npy_intp channels, npy_intp inner)
{
    #pragma omp parallel for schedule(static) if (outer * channels * inner > CONVAE_PARALLEL_MIN)
    for (npy_intp c = 0; c < channels; c++) {
        double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (npy_intp o = 0; o < outer; o++) {
            const float* plane = x + (o * channels + c) * inner;
            npy_intp i = 0;
            for (; i + 8 <= inner; i += 8)
                for (int l = 0; l < 8; l++)
                    lanes[l] += plane[i + l];
            for (; i < inner; i++)
                lanes[0] += plane[i];
        }
        y[c] = (float)(((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
                       + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])));
    }
}

/* out[c] for c < n: the maximum of top[2c], top[2c+1], bottom[2c], bottom[2c+1]. */
static inline void convae_max_2x2_row(const float* top, const float* bottom, float* out,
                                      npy_intp n)
{
    for (npy_intp c = 0; c < n; c++) {
        float a = top[2 * c] > top[2 * c + 1] ? top[2 * c] : top[2 * c + 1];
        float b = bottom[2 * c] > bottom[2 * c + 1] ? bottom[2 * c] : bottom[2 * c + 1];
        out[c] = a > b ? a : b;
    }
}

/* y (planes, H/2, W/2): the maximum of each 2x2 block of x (planes, H, W);
   an odd last row or column is dropped. */
static void convae_max_pool_2x2(const float* x, float* y, npy_intp planes,
                                npy_intp H, npy_intp W)
{
    const npy_intp oh = H / 2, ow = W / 2;
    #pragma omp parallel for schedule(static) if (planes * H * W > CONVAE_PARALLEL_MIN)
    for (npy_intp p = 0; p < planes; p++)
        for (npy_intp r = 0; r < oh; r++) {
            const float* top = x + (p * H + 2 * r) * W;
            convae_max_2x2_row(top, top + W, y + (p * oh + r) * ow, ow);
        }
}


/* y (n, channels, H/2, W/2) = 2x2 max pooling of activation(x + bias) for x
   (n, channels, H, W) and one bias per channel, without writing the
   activations out. It pools first and activates the maxima alone: rounding
   x + bias keeps the order of x, and tanh and rectify are increasing, so the
   maximum is the same, for a quarter of the tanhf calls. */
template <int ACTIVATION>
static void convae_bias_activation_max_pool_2x2(const float* x, const float* bias, float* y,
                                                npy_intp n, npy_intp channels,
                                                npy_intp H, npy_intp W)
{
    const npy_intp planes = n * channels, oh = H / 2, ow = W / 2;
    #pragma omp parallel for schedule(static) if (planes * H * W > CONVAE_PARALLEL_MIN)
    for (npy_intp p = 0; p < planes; p++) {
        const float shift = bias[p % channels];
        float* out = y + p * oh * ow;
        for (npy_intp r = 0; r < oh; r++) {
            const float* top = x + (p * H + 2 * r) * W;
            convae_max_2x2_row(top, top + W, out + r * ow, ow);
        }
        for (npy_intp i = 0; i < oh * ow; i++)
            out[i] = convae_activate<ACTIVATION>(out[i] + shift);
    }
}

/* Pooled columns of a row whose maxima and gradients are spread to pairs at
   a time (pooling's gradient). */
#define CONVAE_POOL_CHUNK 128

/* The gradient routed to one input x (g, or 0 where x is not its window's
   maximum); THROUGH_TANH: x is tanh's output, and the gradient is multiplied
   by tanh's derivative 1 - x * x as Theano's elementwise loop multiplies it
   (zeros too, so that a NaN x still gives a NaN). */
template <bool THROUGH_TANH>
static inline float convae_pool_grad_out(float routed, float x)
{
    return THROUGH_TANH ? routed * (1.0f - x * x) : routed;
}

/* gx (planes, H, W): g (planes, H/2, W/2) goes to every x equal to its 2x2
   block's maximum m; everything else, the dropped border included, is 0
   (each through convae_pool_grad_out). A chunk of a pooled row's m and g is
   spread to pairs once for its two input rows, so that each row is one
   comparison loop gcc vectorises. */
template <bool THROUGH_TANH>
static void convae_max_pool_2x2_grad(const float* x, const float* m, const float* g,
                                     float* gx, npy_intp planes, npy_intp H, npy_intp W)
{
    const npy_intp oh = H / 2, ow = W / 2;
    #pragma omp parallel for schedule(static) if (planes * H * W > CONVAE_PARALLEL_MIN)
    for (npy_intp p = 0; p < planes; p++) {
        const float* xp = x + p * H * W;
        float* gp = gx + p * H * W;
        for (npy_intp r = 0; r < oh; r++) {
            for (npy_intp c0 = 0; c0 < ow; c0 += CONVAE_POOL_CHUNK) {
                const npy_intp n = ow - c0 < CONVAE_POOL_CHUNK
                                   ? ow - c0 : CONVAE_POOL_CHUNK;
                float m2[2 * CONVAE_POOL_CHUNK], g2[2 * CONVAE_POOL_CHUNK];
                convae_spread_pairs(m + (p * oh + r) * ow + c0, m2, n);
                convae_spread_pairs(g + (p * oh + r) * ow + c0, g2, n);
                for (npy_intp h = 0; h < 2; h++) {
                    const float* xr = xp + (2 * r + h) * W + 2 * c0;
                    float* out = gp + (2 * r + h) * W + 2 * c0;
                    for (npy_intp k = 0; k < 2 * n; k++)
                        out[k] = convae_pool_grad_out<THROUGH_TANH>(
                            xr[k] == m2[k] ? g2[k] : 0.0f, xr[k]);
                }
            }
            if (W % 2)
                for (npy_intp q = (2 * r + 1) * W - 1; q < (2 * r + 2) * W; q += W)
                    gp[q] = convae_pool_grad_out<THROUGH_TANH>(0.0f, xp[q]);
        }
        for (npy_intp q = 2 * oh * W; q < H * W; q++)  /* an odd last row */
            gp[q] = convae_pool_grad_out<THROUGH_TANH>(0.0f, xp[q]);
    }
}
