"""Eight bytes of an array read as one word, wherever they start.

Comparing two ids codepoint by codepoint costs a load, a compare and a branch per
codepoint, and the loop's exit mispredicts once per id: at 200 ids a request that was
most of an id lookup's time with the table in cache. Read as 8-byte words, a 15-character
id is two comparisons. :func:`word` reads the 8 bytes at any byte offset (unaligned, as
x86 and ARMv8 allow) through an intrinsic; without the JIT it reads them with numpy, so
the kernels that call it still run (and are covered) in pure Python.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload


def word(a, at):
    """The 8 bytes of ``a`` (1-d, C-contiguous) from byte ``at`` on as a ``uint64`` (in
    the machine's byte order); the caller keeps ``at + 8`` within ``a.nbytes``."""
    return np.frombuffer(a.view(np.uint8)[at : at + 8].tobytes(), np.uint64)[0]


@intrinsic
def _word(typingctx, a, at):
    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        base = builder.bitcast(arr.data, ir.IntType(8).as_pointer())
        ptr = builder.gep(base, [args[1]])
        i64 = ir.IntType(64)
        return builder.load(builder.bitcast(ptr, i64.as_pointer()), align=1)

    return types.uint64(a, at), codegen


@overload(word)
def _word_overload(a, at):
    return lambda a, at: _word(a, at)
