"""Dropout's random numbers on every core: Theano's MRG31k3p uniform op, in parallel.

Lasagne's dropout draws its masks from ``MRG_RandomStreams``, whose CPU op
(``mrg_uniform``) computes one sample after another on one core: about 2 ms
of every training step of the post's network, for 98,304 samples. Its
15,360 streams are independent (sample i comes from stream i % n_streams), so
``ParallelMRGUniform`` advances them stream by stream over the cores
(``c_code/mrg.c``) and gives the very same samples and final states;
``convae.runtime.rewrites`` swaps it in. Theano's op is its base: its
checks, shapes, state handling and the in-place rewrite apply unchanged;
only the loop they call is convae's.
"""
import hashlib

import theano
from theano.sandbox.rng_mrg import mrg_uniform

from convae.runtime.base import read_c_code


class ParallelMRGUniform(mrg_uniform):
    """mrg_uniform(output_type, inplace) with its sample loop split over the cores.

    Same inputs (rstate: int32 (n_streams, 6); size: int64 vector) and outputs
    (the advanced rstate; samples in (0, 1] of ``output_type``, float32 or
    float64) as Theano's op, to the bit.
    """

    def c_headers(self):
        return (["<omp.h>"] if theano.config.openmp else []) + super().c_headers()

    def c_compile_args(self):
        return ["-fopenmp"] if theano.config.openmp else []

    def c_support_code(self):
        return read_c_code("mrg.c")

    def c_code_cache_version(self):
        source = hashlib.sha256(self.c_support_code().encode()).hexdigest()
        return (source, super().c_code_cache_version(), theano.config.openmp)
