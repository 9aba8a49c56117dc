/* ParallelDot (see convae/runtime/dot.py): a float32 matrix product whose
   rows are split over the cores, each part one OpenBLAS call on one thread.
   Needs convae_ops.h and blas.h. */

/* Below this many multiply-adds one thread computes the whole product. */
#define CONVAE_DOT_PARALLEL_MIN (1L << 20)

/* out (M, N) = scale * x (M, K) . y (K, N), out C-contiguous; x given as
   it is (C-contiguous (M, K)) or, where trans_x, as its C-contiguous
   transpose (K, M); y likewise (trans_y: (N, K)), so that no transposed
   copy is made. */
static void convae_dot(const float* x, const float* y, float* out, int M, int K, int N,
                       float scale, int trans_x, int trans_y)
{
    if (K == 0) {  /* a sum of nothing: zeros (and no BLAS call with a zero leading dimension) */
        memset(out, 0, (size_t)M * N * sizeof(float));
        return;
    }
    const int blas_threads = convae_blas_one_thread();
    const float zero = 0.0f;
    int ldx = trans_x ? M : K, ldy = trans_y ? K : N;
    char op_x = trans_x ? 'T' : 'N', op_y = trans_y ? 'T' : 'N';
    #pragma omp parallel if ((long)M * K * N >= CONVAE_DOT_PARALLEL_MIN)
    {
        const int parts = convae_num_threads(), part = convae_thread_num();
        const int m0 = (int)((long)M * part / parts), m1 = (int)((long)M * (part + 1) / parts);
        int rows = m1 - m0;
        /* Row-major out = x . y is column-major out^T = y^T . x^T. */
        if (rows > 0 && N > 0)
            sgemm_(&op_y, &op_x, &N, &rows, &K, &scale,
                   y, &ldy, x + (trans_x ? (long)m0 : (long)m0 * K), &ldx,
                   &zero, out + (long)m0 * N, &N);
    }
    convae_blas_threads_restore(blas_threads);
}
