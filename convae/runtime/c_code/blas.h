/* What convae's BLAS-calling ops share (BatchedCorr's BLAS path, ParallelDot):
   OpenBLAS on one thread while each OpenMP thread calls it on its own part.
   Needs Theano's BLAS header (sgemm_). */
#ifndef CONVAE_BLAS_H
#define CONVAE_BLAS_H

extern "C" void openblas_set_num_threads(int) __attribute__((weak));
extern "C" int openblas_get_num_threads(void) __attribute__((weak));

/* Put OpenBLAS on one thread; returns the count to give back to
   convae_blas_threads_restore (0 where the BLAS is not OpenBLAS). */
static inline int convae_blas_one_thread(void)
{
    const int threads = openblas_get_num_threads ? openblas_get_num_threads() : 0;
    if (openblas_set_num_threads) openblas_set_num_threads(1);
    return threads;
}

static inline void convae_blas_threads_restore(int threads)
{
    if (openblas_set_num_threads) openblas_set_num_threads(threads);
}

#endif
