"""PyTensor functions compiled once per shape of their inputs, for the JAX backend.

``jax.jit`` traces a function with its arguments' shapes known, but a PyTensor graph whose
shapes are computed from its inputs' (a ``scan``'s gradient sizes its buffers from the
number of steps, ``max(1, n) + 1``) hands JAX those sizes as traced values, which
``jnp.empty`` and ``jnp.broadcast_to`` refuse ("Shapes must be 1D sequences of concrete
values").  Rebuilt with inputs of static shape, the same graph's shapes are constants that
PyTensor folds before JAX sees them.  :class:`StaticShapeFunction` does that on first
sight of each shape, as ``jax.jit`` itself would recompile: a worker's chunks come in a
few shapes (full chunks and a batch's last one), so a handful of compilations serve a
run.

:meth:`StaticShapeFunction.loop` runs the same graph over several chunks in one call, a
loop inside the compiled function, each chunk's outputs kept apart
(:class:`LoopedJAXLinker`).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.mode import Mode, get_mode
from pytensor.graph.replace import clone_replace
from pytensor.link.jax.linker import JAXLinker

from dhf.reduction import BINS


@contextlib.contextmanager
def _quiet_tracing():
    """Silence what compiling for JAX says that a user can do nothing about: PyTensor's
    notice that JAX drops its shape asserts, and JAX's about float32 buffers updated with
    float64 values inside a scan's gradient (PyTensor's own casts, which JAX applies)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipping .* as JAX tracing would remove")
        warnings.filterwarnings("ignore", "scatter inputs have incompatible types",
                                FutureWarning)
        yield


class LoopedJAXLinker(JAXLinker):
    """PyTensor's JAX linker, with the function run over a stack of chunks.

    The compiled function takes ``(count, x_1, …, x_n, shared…)``: each of the first
    ``n_looped`` graph inputs after ``count`` holds a stack of ``G`` chunks (a leading
    axis), and the graph runs on chunks ``0 … count − 1`` in a ``fori_loop``, each
    output stacked likewise (rows from ``count`` on are zeros).  ``count`` is a run-time
    value, so one compilation serves every count up to ``G``, and every chunk runs the
    same loop body: its outputs have the same bits whichever call, position or count it
    comes in (``tests/test_worker.py`` checks them against one-chunk calls).

    With ``summed``, each output is instead the chunks' exact parts added up,
    ``(BINS,) + its shape`` float64 (:func:`dhf.reduction_jax.split_traced`): the
    :class:`dhf.reduction.Parts` of the chunks' sum, with the bits of splitting and
    adding each chunk's output on the host, and ``BINS`` values to bring back a
    parameter whatever the chunk count.
    """

    def __init__(self, n_looped: int, *args, summed: bool = False, **kwargs):
        self.n_looped = n_looped
        self.summed = summed
        super().__init__(*args, **kwargs)

    def clone(self, allow_gc=None):
        return type(self)(self.n_looped, summed=self.summed, allow_gc=allow_gc)

    def jit_compile(self, fn):
        import jax
        from jax import lax

        from dhf.reduction_jax import split_traced

        n = self.n_looped

        def looped(count, *args):
            stacks, shared = args[:n], args[n:]

            def one(i):
                chunk = [lax.dynamic_index_in_dim(x, i, 0, keepdims=False) for x in stacks]
                return fn(count, *chunk, *shared)

            if self.summed:  # each chunk's outputs split and added to the parts so far
                def add(i, parts):
                    return jax.tree.map(lambda p, x: p + split_traced(x), parts, one(i))

                zeros = jax.tree.map(
                    lambda o: jax.numpy.zeros((BINS,) + o.shape, "float64"),
                    jax.eval_shape(one, 0))
                return lax.fori_loop(0, count, add, zeros)
            size = stacks[0].shape[0]
            outputs = jax.tree.map(lambda o: jax.numpy.zeros((size,) + o.shape, o.dtype),
                                   jax.eval_shape(one, 0))

            def body(i, outputs):
                def put(o, x):
                    return lax.dynamic_update_index_in_dim(o, x, i, 0)

                return jax.tree.map(put, outputs, one(i))

            return lax.fori_loop(0, count, body, outputs)

        return jax.jit(looped)


class StaticShapeFunction:
    """``pytensor.function(inputs, outputs, mode=mode)``, compiled for each distinct
    tuple of argument shapes with the inputs replaced by static-shape copies.

    The shared variables ``params`` (the model's parameters, whose shapes never change)
    become inputs too, whose values each call takes from ``param_values()`` (by default
    their shared values): the worker hands JAX arrays it has already placed on the
    device, so that a GPU receives θ once per update rather than once per chunk.  Inputs
    are trusted (PyTensor would copy a JAX array to the host to check it): the caller
    gives each the graph's dtype.  With ``on_device`` the outputs are JAX's own arrays,
    left where they were computed (the forward pass's states, which the Gv calls of the
    update read there); otherwise NumPy arrays.

    ``looped`` is how many of the leading ``inputs`` :meth:`loop` takes as stacks of
    chunks; with ``summed`` :meth:`loop` returns each output's exact parts summed over
    the chunks instead (:class:`LoopedJAXLinker`).
    """

    def __init__(self, inputs: Sequence, outputs, mode, params: Sequence = (),
                 param_values: Callable[[], list] | None = None, on_device: bool = False,
                 looped: int = 0, summed: bool = False, **kwargs):
        self.inputs, self.outputs = list(inputs), outputs
        self.mode, self.kwargs = mode, kwargs
        self.params = list(params)
        self.param_values = param_values or (
            lambda: [p.get_value(borrow=True) for p in self.params])
        self.on_device = on_device
        self.looped = looped
        self.summed = summed
        self._compiled: dict[tuple, pytensor.compile.Function] = {}

    def __call__(self, *args):
        return self._run((), tuple(np.shape(a) for a in args), args)

    def loop(self, count: int, *args):
        """The function on chunks ``0 … count − 1`` of stacks of chunks: each of the
        first ``looped`` arguments has a leading axis of chunks (``G`` of them, the same
        in every call, so that one compilation serves), the others are shared; each
        output gains that leading axis, or with ``summed`` is the ``(BINS,) + shape``
        float64 parts of the chunks' sum (:class:`LoopedJAXLinker`)."""
        shapes = tuple(np.shape(a)[1:] if i < self.looped else np.shape(a)
                       for i, a in enumerate(args))
        return self._run((np.int64(count),), shapes, args, key=np.shape(args[0])[:1])

    def _run(self, head: tuple, shapes: tuple, args, key: tuple = ()):
        values = self.param_values()
        fn = self._compiled.get((key, shapes))
        if fn is None:
            static = [pt.tensor(v.name, dtype=v.dtype, shape=shape)
                      for v, shape in zip(self.inputs, shapes)]
            held = [pt.tensor(p.name, dtype=p.dtype, shape=np.shape(value))
                    for p, value in zip(self.params, values)]
            outputs = clone_replace(self.outputs, {**dict(zip(self.params, held)),
                                                   **dict(zip(self.inputs, static))})
            count, mode = [], self.mode
            if head:
                count = [pt.scalar("count", dtype="int64")]
                jax_mode = get_mode(self.mode)
                mode = Mode(linker=LoopedJAXLinker(self.looped, summed=self.summed),
                            optimizer=jax_mode.optimizer)
            with _quiet_tracing():
                fn = self._compiled[key, shapes] = pytensor.function(
                    count + static + held, outputs, mode=mode, **self.kwargs)
                fn.trust_input = True
                out = fn(*head, *args, *values)  # JAX traces and compiles on this call
        else:
            out = fn(*head, *args, *values)
        if head and self.summed:
            return ([np.asarray(o) for o in out] if isinstance(out, list)
                    else np.asarray(out))
        # JAX's type promotion can return float64 where PyTensor typed float32 (a scalar
        # mixed with a float64 constant): give each output the graph's dtype, so that the
        # next function, which takes it as a float32 input, accepts it.
        if isinstance(self.outputs, (list, tuple)):
            return [self._typed(o, v.dtype) for o, v in zip(out, self.outputs)]
        return self._typed(out, self.outputs.dtype)

    def _typed(self, value, dtype):
        if self.on_device:
            return value if value.dtype == dtype else value.astype(dtype)
        return np.asarray(value, dtype=dtype)

    @property
    def shapes_compiled(self) -> int:
        """How many shapes it has been compiled for."""
        return len(self._compiled)
