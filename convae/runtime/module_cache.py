"""Make Theano 1.0.5's compile cache hit for the modules it recompiles in every process.

Theano's compile cache misses in two ways on Python 3, so every new process
recompiled a few modules (about 6 s of each warm start): it never caches the
module of an op whose ``__props__`` is empty (``Dot22``, ``Alloc``,
``DotModulo``, ...), mistaking the empty tuple for a missing version; and it
versions ``COp`` modules (``DimShuffle``, ...) by Python's ``hash`` of their C
source, which is salted afresh in every process. ``fix()`` versions the first
by their ops' and types' own cache versions and the second by a SHA-256 of
the source, so each module is compiled once. It changes Theano's classes for
the whole process, so it runs only from ``convae.runtime.enable()``.
"""
import hashlib

from theano.gof import COp
from theano.gof.cc import CLinker


def cache_version(linker, fgraph):
    """The C-module cache version of fgraph, ignoring ops' empty ``__props__``.

    A tuple of every op's and every input's and output's type's
    ``c_code_cache_version``, or () if any of them is unversioned.
    """
    version = []
    for node in linker.schedule(fgraph):
        version.append(node.op.c_code_cache_version_apply(node))
        version.extend(v.type.c_code_cache_version()
                       for v in node.inputs + node.outputs)
    return tuple(version) if all(version) else ()


def cop_cache_version(op):
    """A COp's cache version: a SHA-256 of its C source, the same in every process."""
    source = hashlib.sha256("\0".join(op.func_codes).encode()).hexdigest()
    version = (source,)
    if hasattr(op, "params_type"):
        version += (op.params_type.c_code_cache_version(),)
    return version


def fix():
    """Make Theano's compile cache hit for modules it recompiles in every process."""
    theano_key = CLinker.cmodule_key_

    def cmodule_key_(self, fgraph, *args, **kwargs):
        key = theano_key(self, fgraph, *args, **kwargs)
        if key is None or key[0] != ():
            return key
        version = cache_version(self, fgraph)
        return (version + ("convae: empty __props__",), key[1]) if version else key

    CLinker.cmodule_key_ = cmodule_key_
    COp.c_code_cache_version = cop_cache_version
