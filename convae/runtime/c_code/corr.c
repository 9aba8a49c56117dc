/* BatchedCorr (see convae/runtime/corr.py): the three valid, stride-1 float32
   correlations of CorrMM, by the direct kernels (AVX-512 or AVX2) where the
   CPU and the shapes allow, else by one BLAS product
   per cache-sized chunk of images. Shapes: bottom (N, C, H, W), weights (F,
   C, kh, kw), top (N, F, oh, ow) with oh = H - kh + 1, ow = W - kw + 1,
   P = oh * ow, K = C * kh * kw. Needs convae_ops.h, blas.h, and the direct
   kernels: corr_avx2.c and corr_avx512.c, each followed by corr_simd.c. */

#include <time.h>

enum convae_direction {
    CONVAE_FORWARD,       /* out = top from (a = bottom, b = weights) */
    CONVAE_GRAD_INPUTS,   /* out = bottom from (a = weights, b = top) */
    CONVAE_GRAD_WEIGHTS   /* out = weights' gradient from (a = bottom, b = top) */
};

/* The kernels; CONVAE_AUTO picks the first of the others that can run. */
enum convae_kernel { CONVAE_AUTO, CONVAE_AVX512, CONVAE_AVX2, CONVAE_BLAS };
static const char* const convae_kernel_names[] = {"auto", "avx512", "avx2", "blas"};
static const char* const convae_direction_names[] = {"forward", "grad_inputs", "grad_weights"};

/* BLAS path: each thread's unrolled chunk of images aims at this many bytes
   (a Zen 3 core has 512 KiB of L2); a chunk is never less than one image. */
#define CONVAE_BLAS_CHUNK_BYTES (1L << 20)
/* Direct gradient for the weights: each thread's chunk of images (inputs and
   transposed tops) aims at this many bytes, so it stays in L2 while the
   kernel walks it once for every six filter taps. */
#define CONVAE_DIRECT_CHUNK_BYTES (256L << 10)

/* Images in chunks of at most nb for `threads` threads: each thread's steps
   (steps / threads of them, in a row, as OpenMP's static schedule deals
   them) cover its own share of the N images, the shares differing by one at
   most. Cutting all N into chunks in turn instead left one thread 72 of 128
   images and the other 56 where nb was 9. */
static int convae_chunk_steps(int N, int nb, int threads)
{
    const int share = (N + threads - 1) / threads;
    return threads * ((share + nb - 1) / nb);
}

/* Step `step`'s chunk (see convae_chunk_steps): sets *n0 to its first image
   and returns how many images it has (0 for a step with none left). */
static int convae_chunk(int step, int N, int nb, int threads, int* n0)
{
    const int steps_each = convae_chunk_steps(N, nb, threads) / threads;
    const int t = step / steps_each;
    const int end = (int)((long)(t + 1) * N / threads);
    *n0 = (int)((long)t * N / threads) + (step % steps_each) * nb;
    return end - *n0 < nb ? (end - *n0 > 0 ? end - *n0 : 0) : nb;
}

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

/* The channels a direct kernel keeps in registers come in blocks of this
   many: 32 for AVX-512 (wide), 16 for AVX2. */
static inline int convae_channel_block(int wide)
{
    return wide ? 32 : 16;
}

/* The gradient for the inputs where its channels do not come in the
   kernel's blocks (convae_channel_block; the post's last layer has one):
   the scatter kernels, convae_grad_inputs_scatter_avx512 and
   convae_grad_inputs_scatter_avx2, for rows of at least 16 top pixels and
   the filter sizes they are built for, 5x5 and 3x3. */
static int convae_grad_inputs_scatter_fits(int block, int C, int W, int kh, int kw)
{
    return C % block != 0 && W - kw + 1 >= 16 && kh == kw && (kh == 5 || kh == 3);
}

/* True where a kernel can run: the CPU has its instructions, and the
   channels it keeps in registers (the filters, or for the gradient for the
   inputs the input channels) come in its block size, 32 or 16, or (gradient
   for the inputs) the shapes fit its scatter kernel. */
static int convae_kernel_fits(convae_kernel kernel, convae_direction direction,
                              int C, int F, int W, int kh, int kw)
{
    const int channels = direction == CONVAE_GRAD_INPUTS ? C : F;
    const int block = convae_channel_block(kernel == CONVAE_AVX512);
    const int fits = channels % block == 0
        || (direction == CONVAE_GRAD_INPUTS
            && convae_grad_inputs_scatter_fits(block, C, W, kh, kw));
    if (kernel == CONVAE_AVX512)
        return fits && __builtin_cpu_supports("avx512f");
    if (kernel == CONVAE_AVX2)
        return fits && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return kernel == CONVAE_BLAS;
}

/* The kernels that can run this correlation here, in the order of the rule
   CONVAE_AUTO follows where nothing is measured: AVX-512, AVX2, BLAS.
   Returns how many (at least one: BLAS). */
static int convae_fitting_kernels(convae_direction direction, int C, int F, int W,
                                  int kh, int kw, convae_kernel fitting[3])
{
    const convae_kernel all[3] = {CONVAE_AVX512, CONVAE_AVX2, CONVAE_BLAS};
    int n = 0;
    for (int k = 0; k < 3; k++)
        if (convae_kernel_fits(all[k], direction, C, F, W, kh, kw))
            fitting[n++] = all[k];
    return n;
}

/* After the Python calls of convae's bookkeeping (which kernel ran, which to
   run): an ordinary exception (no module, an unwritable file) is forgotten,
   returning 0. Any other, KeyboardInterrupt above all, stays set and -1 is
   returned, failing the op: Python runs a pending signal's handler at the
   first Python code after the signal, most often one of these calls after a
   long kernel, and Ctrl-C (and convae's SIGTERM and SIGHUP) must reach the
   program, not end here. */
static int convae_forgive(void)
{
    if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyErr_Clear();
    return 0;
}

/* Note in convae.runtime.corr.KERNELS_RUN which kernel ran this correlation
   (best effort: only an interrupt fails the op, see convae_forgive). */
static int convae_corr_record(convae_direction direction, convae_kernel kernel,
                              int C, int F, int H, int W, int kh, int kw)
{
    PyObject* module = PyImport_ImportModule("convae.runtime.corr");
    PyObject* table = module ? PyObject_GetAttrString(module, "KERNELS_RUN") : NULL;
    PyObject* key = PyUnicode_FromFormat("%s C=%d F=%d %dx%d filter %dx%d",
                                         convae_direction_names[direction],
                                         C, F, H, W, kh, kw);
    PyObject* name = PyUnicode_FromString(convae_kernel_names[kernel]);
    if (table && PyDict_Check(table) && key && name)
        PyDict_SetItem(table, key, name);
    Py_XDECREF(name);
    Py_XDECREF(key);
    Py_XDECREF(table);
    Py_XDECREF(module);
    return convae_forgive();
}

/* The three correlations with the direct kernels (AVX-512 if wide, else
   AVX2): one image per OpenMP iteration for the forward correlation and the
   gradient for the inputs; for the weights, chunks of images per thread
   summed into per-thread gradients. Returns 0, or -1 if memory ran out. */
static int convae_corr_direct(convae_direction direction, int wide, const float* a,
                              const float* b, float* out,
                              int N, int C, int H, int W, int F, int kh, int kw)
{
    const int P = (H - kh + 1) * (W - kw + 1), K = C * kh * kw;
    const int threads = convae_max_threads();
    /* Weights rearranged (forward, inputs) or per-thread sums (weights). */
    const size_t wsize = (size_t)K * F * (direction == CONVAE_GRAD_WEIGHTS ? threads : 1);
    float* w = convae_alloc_floats(wsize, 1);
    /* Offsets in a bottom image: of each tap (c, i, j), and of each top
       pixel's window (y, x). */
    int* kofs = (int*)malloc((size_t)K * sizeof(int));
    int* pofs = (int*)malloc((size_t)P * sizeof(int));
    if (w == NULL || kofs == NULL || pofs == NULL) {
        free(w);
        free(kofs);
        free(pofs);
        return -1;
    }
    for (int p = 0; p < P; p++)
        pofs[p] = p / (W - kw + 1) * W + p % (W - kw + 1);
    for (int f = 0; f < F; f++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < kh; i++)
                for (int j = 0; j < kw; j++) {
                    const int k = (c * kh + i) * kw + j;
                    if (direction == CONVAE_FORWARD)
                        w[(long)k * F + f] = b[(long)f * K + k];
                    else if (direction == CONVAE_GRAD_INPUTS)
                        w[((long)(i * kw + j) * F + f) * C + c] = a[(long)f * K + k];
                    kofs[k] = (c * H + i) * W + j;
                }
    int nb = (int)(CONVAE_DIRECT_CHUNK_BYTES / (((long)C * H * W + (long)P * F) * sizeof(float)));
    nb = nb < 1 ? 1 : nb;
    const int steps = direction == CONVAE_GRAD_WEIGHTS ? convae_chunk_steps(N, nb, threads) : N;
    /* Wide output rows: the weight gradient (with AVX2 or AVX-512) and the
       AVX-512 forward correlation take pixels in vectors, reading the images
       in place. */
    const int by_rows = W - kw + 1 >= 16 && (direction == CONVAE_GRAD_WEIGHTS
                                             || (wide && direction == CONVAE_FORWARD));
    const int scatter = direction == CONVAE_GRAD_INPUTS
        && convae_grad_inputs_scatter_fits(convae_channel_block(wide), C, W, kh, kw);
    /* The AVX-512 gradient for the inputs a filter row at a time, for the
       filter widths it is built for. */
    const int rows_inputs = direction == CONVAE_GRAD_INPUTS && !scatter && wide
                            && (kw == 5 || kw == 3);
    int failed = 0;
    #pragma omp parallel
    {
        const size_t scratch = scatter ? (size_t)kh * kw * P
                             : direction == CONVAE_GRAD_INPUTS
                               ? (size_t)H * W * C
                                 + (rows_inputs ? (size_t)F * CONVAE_INPUT_ROW_PIXELS : 0)
                             : (direction == CONVAE_GRAD_WEIGHTS && !by_rows
                                ? (size_t)nb * P * F : 0);
        float* tmp = scratch ? convae_alloc_floats(scratch, 0) : NULL;
        #pragma omp for schedule(static)
        for (int step = 0; step < steps; step++) {
            if (scratch && tmp == NULL) {
                failed = 1;
            } else if (direction == CONVAE_FORWARD) {
                (by_rows ? convae_forward_rows_avx512
                 : wide ? convae_forward_avx512
                      : K < 64 && P % 8 == 0 ? convae_forward_short_avx2
                      : convae_forward_avx2)(
                    a + (long)step * C * H * W, w, kofs, out + (long)step * F * P,
                    C, H, W, F, kh, kw);
            } else if (direction == CONVAE_GRAD_INPUTS && scatter) {
                (wide ? (kh == 5 ? convae_grad_inputs_scatter_avx512<5, 5>
                                 : convae_grad_inputs_scatter_avx512<3, 3>)
                      : (kh == 5 ? convae_grad_inputs_scatter_avx2<5, 5>
                                 : convae_grad_inputs_scatter_avx2<3, 3>))(
                    b + (long)step * F * P, w, out + (long)step * C * H * W, tmp,
                    C, H, W, F);
            } else if (rows_inputs) {
                (kw == 5 ? convae_grad_inputs_rows_avx512<5>
                         : convae_grad_inputs_rows_avx512<3>)(
                    b + (long)step * F * P, w, out + (long)step * C * H * W,
                    tmp, tmp + (size_t)H * W * C, C, H, W, F, kh);
            } else if (direction == CONVAE_GRAD_INPUTS) {
                (wide ? convae_grad_inputs_avx512 : convae_grad_inputs_avx2)(
                    b + (long)step * F * P, w, out + (long)step * C * H * W,
                    tmp, C, H, W, F, kh, kw);
            } else if (by_rows) {  /* the weight gradient */
                int n0;
                const int m = convae_chunk(step, N, nb, threads, &n0);
                if (m == 0)
                    continue;
                (wide ? convae_grad_weights_rows_avx512 : convae_grad_weights_rows_avx2)(
                                                a + (long)n0 * C * H * W,
                                                b + (long)n0 * F * P, kofs,
                                                w + (long)convae_thread_num() * K * F,
                                                m, C, H, W, F, kh, kw);
            } else {
                int n0;
                const int m = convae_chunk(step, N, nb, threads, &n0);
                if (m == 0)
                    continue;
                for (int n = 0; n < m; n++)
                    for (int f = 0; f < F; f++)
                        for (int p = 0; p < P; p++)
                            tmp[((long)n * P + p) * F + f] = b[((long)(n0 + n) * F + f) * P + p];
                (wide ? convae_grad_weights_avx512 : convae_grad_weights_avx2)(
                    a + (long)n0 * C * H * W, tmp, kofs, pofs,
                    w + (long)convae_thread_num() * K * F, m, C, H, W, F, kh, kw);
            }
        }
        free(tmp);
    }
    if (direction == CONVAE_GRAD_WEIGHTS)
        for (int f = 0; f < F; f++)
            for (int k = 0; k < K; k++) {
                float sum = 0;
                for (int t = 0; t < threads; t++)
                    sum += w[((long)t * K + k) * F + f];
                out[(long)f * K + k] = sum;
            }
    free(w);
    free(kofs);
    free(pofs);
    return failed ? -1 : 0;
}

/* The three correlations by unrolling a chunk of images side by side for one
   BLAS product per chunk, one chunk per OpenMP iteration; OpenBLAS runs on
   one thread meanwhile, as each OpenMP thread calls it. Returns 0, or -1 if
   memory ran out. */
static int convae_corr_blas(convae_direction direction, const float* a,
                            const float* b, float* out,
                            int N, int C, int H, int W, int F, int kh, int kw)
{
    const int P = (H - kh + 1) * (W - kw + 1), K = C * kh * kw;
    const float* bottom = direction == CONVAE_GRAD_INPUTS ? NULL : a;
    const float* weights = direction == CONVAE_FORWARD ? b
                         : (direction == CONVAE_GRAD_INPUTS ? a : NULL);
    const float* top = direction == CONVAE_FORWARD ? NULL : b;
    const int threads = convae_max_threads();
    int nb = (int)(CONVAE_BLAS_CHUNK_BYTES / ((long)K * P * sizeof(float)));
    if (nb < 1) nb = 1;
    if (nb > (N + threads - 1) / threads) nb = (N + threads - 1) / threads;
    if (nb < 1) nb = 1;
    const int chunks = convae_chunk_steps(N, nb, threads);
    float* partial = NULL;
    if (direction == CONVAE_GRAD_WEIGHTS) {
        partial = (float*)calloc((size_t)threads * F * K, sizeof(float));
        if (partial == NULL) return -1;
    }
    if (direction == CONVAE_GRAD_INPUTS)
        memset(out, 0, (size_t)N * C * H * W * sizeof(float));
    const int blas_threads = convae_blas_one_thread();
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
            int n0;
            const int m = convae_chunk(chunk, N, nb, threads, &n0);
            if (m == 0)
                continue;
            int ncols = m * P;
            if (direction == CONVAE_FORWARD) {
                convae_im2col(bottom + (long)n0 * C * H * W, m, C, H, W, kh, kw, col);
                /* fp (F, ncols) = weights (F, K) . col (K, ncols) */
                sgemm_("N", "N", &ncols, &F, &K, &one, col, &ncols,
                       weights, &K, &zero, fp, &ncols);
                convae_to_image_major(fp, m, F, P, out + (long)n0 * F * P);
            } else if (direction == CONVAE_GRAD_INPUTS) {
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
    convae_blas_threads_restore(blas_threads);
    if (direction == CONVAE_GRAD_WEIGHTS) {
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

/* The sizes of a correlation from its inputs' shapes ad and bd: sizes[] =
   {N, C, H, W, F, kh, kw} and the output's shape out_dims. Returns 0, or -1
   with a Python ValueError set if the shapes do not fit. */
static int convae_corr_shapes(convae_direction direction, const npy_intp* ad,
                              const npy_intp* bd, npy_intp sizes[7], npy_intp out_dims[4])
{
    npy_intp N, C, H, W, F, kh, kw;
    int bad;
    if (direction == CONVAE_FORWARD) {
        N = ad[0]; C = ad[1]; H = ad[2]; W = ad[3];
        F = bd[0]; kh = bd[2]; kw = bd[3];
        bad = bd[1] != C || kh > H || kw > W;
        out_dims[0] = N; out_dims[1] = F; out_dims[2] = H - kh + 1; out_dims[3] = W - kw + 1;
    } else if (direction == CONVAE_GRAD_INPUTS) {
        F = ad[0]; C = ad[1]; kh = ad[2]; kw = ad[3];
        N = bd[0]; H = bd[2] + kh - 1; W = bd[3] + kw - 1;
        bad = bd[1] != F;
        out_dims[0] = N; out_dims[1] = C; out_dims[2] = H; out_dims[3] = W;
    } else {
        N = ad[0]; C = ad[1]; H = ad[2]; W = ad[3];
        F = bd[1]; kh = H - bd[2] + 1; kw = W - bd[3] + 1;
        bad = bd[0] != N || kh < 1 || kw < 1;
        out_dims[0] = F; out_dims[1] = C; out_dims[2] = kh; out_dims[3] = kw;
    }
    if (bad) {
        PyErr_Format(PyExc_ValueError,
            "BatchedCorr: shapes (%ld, %ld, %ld, %ld) and (%ld, %ld, %ld, %ld) do not fit",
            (long)ad[0], (long)ad[1], (long)ad[2], (long)ad[3],
            (long)bd[0], (long)bd[1], (long)bd[2], (long)bd[3]);
        return -1;
    }
    const npy_intp all[7] = {N, C, H, W, F, kh, kw};
    memcpy(sizes, all, sizeof(all));
    return 0;
}

/* out = the correlation by one kernel that can run it. Returns 0, or -1
   with a Python MemoryError set. */
static int convae_corr_run(convae_direction direction, convae_kernel kernel,
                           const float* a, const float* b, float* out, const npy_intp s[7])
{
    const int N = s[0], C = s[1], H = s[2], W = s[3], F = s[4], kh = s[5], kw = s[6];
    const int status = kernel == CONVAE_BLAS
        ? convae_corr_blas(direction, a, b, out, N, C, H, W, F, kh, kw)
        : convae_corr_direct(direction, kernel == CONVAE_AVX512, a, b, out,
                             N, C, H, W, F, kh, kw);
    if (status != 0)
        PyErr_NoMemory();
    return status;
}

/* If name (a Python object) names one of the n fitting kernels, set *kernel
   to it and return 1, else return 0. */
static int convae_kernel_named(PyObject* name, const convae_kernel* fitting, int n,
                               convae_kernel* kernel)
{
    for (int k = 0; PyUnicode_Check(name) && k < n; k++)
        if (PyUnicode_CompareWithASCIIString(name, convae_kernel_names[fitting[k]]) == 0) {
            *kernel = fitting[k];
            return 1;
        }
    return 0;
}

/* Each kernel is timed this many times, round robin; its best time counts. */
#define CONVAE_TIMING_ROUNDS 3

static double convae_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec + 1e-9 * now.tv_nsec;
}

/* The kernel CONVAE_AUTO runs (see convae/runtime/kernel_choice.py): the
   only one that fits, or the one kept for this CPU, correlation and thread
   count (chosen among the same kernels, with the same C), or else each that
   fits timed on these inputs and the choice kept.
   Python trouble (no module, an unwritable file) falls back to the rule's
   pick, fitting[0]. Sets *kernel; returns 0, or -1 with a Python error set
   (no memory for a timed run, or an interrupt: see convae_forgive). */
static int convae_auto_kernel(convae_direction direction, const float* a, const float* b,
                              float* out, const npy_intp s[7], convae_kernel* kernel)
{
    const int C = s[1], H = s[2], W = s[3], F = s[4], kh = s[5], kw = s[6];
    convae_kernel fitting[3];
    const int n = convae_fitting_kernels(direction, C, F, W, kh, kw, fitting);
    *kernel = fitting[0];
    if (n == 1)
        return 0;
    PyObject* module = PyImport_ImportModule("convae.runtime.kernel_choice");
    if (module == NULL)
        return convae_forgive();
    PyObject* key = PyUnicode_FromFormat("%s N=%d C=%d F=%d %dx%d filter %dx%d threads=%d",
                                         convae_direction_names[direction], (int)s[0],
                                         C, F, H, W, kh, kw, convae_max_threads());
    char candidates[32] = "";  /* "avx512,avx2,blas" at the most */
    for (int k = 0; k < n; k++) {
        if (k)
            strcat(candidates, ",");
        strcat(candidates, convae_kernel_names[fitting[k]]);
    }
    PyObject* name = key ? PyObject_CallMethod(module, "chosen", "Os", key, candidates)
                         : NULL;
    PyObject* seconds = NULL;
    int status = 0;
    if (name && !convae_kernel_named(name, fitting, n, kernel)) {
        /* nothing kept (None), or a kernel that cannot run here: time each */
        double best[3] = {1e30, 1e30, 1e30};
        /* How long the process's threads had waited for a CPU, and the time:
           remember keeps nothing measured while other programs had the CPUs. */
        PyObject* waited = PyObject_CallMethod(module, "waited", NULL);
        const double began = convae_seconds();
        for (int round = 0; round < CONVAE_TIMING_ROUNDS && status == 0; round++)
            for (int k = 0; k < n && status == 0; k++) {
                const double start = convae_seconds();
                status = convae_corr_run(direction, fitting[k], a, b, out, s);
                const double took = convae_seconds() - start;
                best[k] = took < best[k] ? took : best[k];
            }
        const double timed = convae_seconds() - began;
        seconds = status == 0 && waited ? PyDict_New() : NULL;
        for (int k = 0; seconds && k < n; k++) {
            PyObject* value = PyFloat_FromDouble(best[k]);
            if (value == NULL || PyDict_SetItemString(seconds, convae_kernel_names[fitting[k]],
                                                      value)) {
                Py_CLEAR(seconds);
            }
            Py_XDECREF(value);
        }
        Py_DECREF(name);
        name = seconds ? PyObject_CallMethod(module, "remember", "OOsOd", key, seconds,
                                             convae_kernel_names[fitting[0]], waited,
                                             timed) : NULL;
        if (name)
            convae_kernel_named(name, fitting, n, kernel);
        Py_XDECREF(waited);
    }
    Py_XDECREF(seconds);
    Py_XDECREF(name);
    Py_XDECREF(key);
    Py_DECREF(module);
    return status ? status : convae_forgive();
}

/* out = the correlation in direction of a and b (C-contiguous), out shaped
   by convae_corr_shapes, by the kernel asked for (CONVAE_AUTO: see
   convae_auto_kernel). Returns 0, or -1 with a Python exception set (a
   kernel that cannot run here, or no memory). */
static int convae_corr(convae_direction direction, convae_kernel kernel,
                       const float* a, const float* b, float* out, const npy_intp s[7])
{
    const int C = s[1], H = s[2], W = s[3], F = s[4], kh = s[5], kw = s[6];
    if (kernel == CONVAE_AUTO) {
        if (convae_auto_kernel(direction, a, b, out, s, &kernel))
            return -1;
    } else if (!convae_kernel_fits(kernel, direction, C, F, W, kh, kw)) {
        PyErr_Format(PyExc_ValueError, "BatchedCorr: the %s kernel cannot run the %s "
                     "correlation of C=%d, F=%d channels on this CPU",
                     convae_kernel_names[kernel], convae_direction_names[direction], C, F);
        return -1;
    }
    if (convae_corr_record(direction, kernel, C, F, H, W, kh, kw))
        return -1;
    return convae_corr_run(direction, kernel, a, b, out, s);
}
