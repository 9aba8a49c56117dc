/* Shared by all of convae's C ops (see convae/runtime/base.py): the size at
   which a loop goes parallel, OpenMP's thread queries, and the plumbing of an
   op whose inputs are made C-contiguous and whose output is a float32 array. */
#ifndef CONVAE_OPS_H
#define CONVAE_OPS_H

#include <string.h>
#include <stdlib.h>

/* Below this many elements a loop runs on one thread: waking the other
   threads would cost more than they save. */
#define CONVAE_PARALLEL_MIN 65536

static inline int convae_thread_num(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static inline int convae_num_threads(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

static inline int convae_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* Buffers the vector kernels load from start on a cache line (64 bytes, one
   zmm register): malloc's 16-byte alignment splits every other 32-byte load
   and every 64-byte load across two lines, which cost conv2's forward
   kernels 20-43% of their speed on the Xeon of family 6, model 207. */
#define CONVAE_VECTOR_ALIGN 64

/* count floats on a CONVAE_VECTOR_ALIGN boundary, zeroed if asked; NULL if
   memory ran out. Release with free(). */
static inline float* convae_alloc_floats(size_t count, int zeroed)
{
    void* p = NULL;
    const size_t bytes = (count ? count : 1) * sizeof(float);
    if (posix_memalign(&p, CONVAE_VECTOR_ALIGN, bytes) != 0)
        return NULL;
    if (zeroed)
        memset(p, 0, bytes);
    return (float*)p;
}

/* Outer (before axis), length (of axis) and inner (after axis) sizes of a. */
static inline void convae_split(PyArrayObject* a, int axis, npy_intp* outer,
                                npy_intp* length, npy_intp* inner)
{
    *outer = 1;
    *inner = 1;
    for (int d = 0; d < axis; d++) *outer *= PyArray_DIMS(a)[d];
    *length = PyArray_DIMS(a)[axis];
    for (int d = axis + 1; d < PyArray_NDIM(a); d++) *inner *= PyArray_DIMS(a)[d];
}

/* Make *out a C-contiguous float32 array of shape dims, reusing it if it is
   one already. Returns 0, or -1 with a Python exception set. */
static inline int convae_prepare(PyArrayObject** out, int nd, const npy_intp* dims)
{
    if (*out == NULL || PyArray_NDIM(*out) != nd || !PyArray_IS_C_CONTIGUOUS(*out)
            || !PyArray_CompareLists(PyArray_DIMS(*out), dims, nd)) {
        Py_XDECREF(*out);
        *out = (PyArrayObject*)PyArray_EMPTY(nd, (npy_intp*)dims, NPY_FLOAT32, 0);
    }
    return *out == NULL ? -1 : 0;
}

#endif
