"""A software prefetch of one array element, for kernels whose loads miss the cache.

At 10^6 arms the id table (16 MB of slots, 8 MB of offsets, the codepoints) exceeds the
caches, and a lookup's loads wait on memory; asking for the next ids' slots while the
current ones are resolved overlaps those waits. :func:`prefetch` is LLVM's
``llvm.prefetch`` (a hint: it never faults and changes no value), compiled in through an
intrinsic; run without the JIT it does nothing, so the kernels that call it still run (and
are covered) in pure Python.
"""

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

#: the intrinsic's name mangles its pointer argument: opaque pointers (``p0``) from LLVM 15,
#: typed (``p0i8``) before, so the name follows the LLVM that llvmlite was built with
_NAME = "llvm.prefetch.p0" if llvm.llvm_version_info[0] >= 15 else "llvm.prefetch.p0i8"


def prefetch(a, i):
    """Ask for the cache line where ``a[i]`` starts (``a`` C-contiguous: an element of a
    1-d array, a row of a 2-d one); nothing without the JIT."""


@intrinsic
def _prefetch(typingctx, a, i):
    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        stride = cgutils.unpack_tuple(builder, arr.strides)[0]
        base = builder.bitcast(arr.data, ir.IntType(8).as_pointer())
        i = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = builder.gep(base, [builder.mul(i, stride)])
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]),
            _NAME,
        )  # fmt: skip
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])  # read, keep in all levels, data
        return context.get_dummy_value()

    return types.void(a, i), codegen


@overload(prefetch)
def _prefetch_overload(a, i):
    return lambda a, i: _prefetch(a, i)
