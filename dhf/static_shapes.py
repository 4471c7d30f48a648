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
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.replace import clone_replace


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


class StaticShapeFunction:
    """``pytensor.function(inputs, outputs, mode=mode)``, compiled for each distinct
    tuple of argument shapes with the inputs replaced by static-shape copies, and the
    shared variables ``fixed`` (the model's parameters, whose shapes never change) given
    their current shapes."""

    def __init__(self, inputs: Sequence, outputs, mode, fixed: Sequence = (), **kwargs):
        self.inputs, self.outputs = list(inputs), outputs
        self.mode, self.kwargs = mode, kwargs
        self.fixed = {p: pt.specify_shape(p, p.get_value(borrow=True).shape) for p in fixed}
        self._compiled: dict[tuple, pytensor.compile.Function] = {}

    def __call__(self, *args):
        shapes = tuple(np.shape(a) for a in args)
        fn = self._compiled.get(shapes)
        if fn is None:
            static = [pt.tensor(v.name, dtype=v.dtype, shape=shape)
                      for v, shape in zip(self.inputs, shapes)]
            outputs = clone_replace(self.outputs,
                                    {**self.fixed, **dict(zip(self.inputs, static))})
            with _quiet_tracing():
                fn = self._compiled[shapes] = pytensor.function(
                    static, outputs, mode=self.mode, **self.kwargs)
                out = fn(*args)  # JAX traces and compiles on this first call
        else:
            out = fn(*args)
        # JAX's type promotion can return float64 where PyTensor typed float32 (a scalar
        # mixed with a float64 constant): give each output the graph's dtype, so that the
        # next function, which takes it as a float32 input, accepts it.
        if isinstance(self.outputs, (list, tuple)):
            return [np.asarray(o, dtype=v.dtype) for o, v in zip(out, self.outputs)]
        return np.asarray(out, dtype=self.outputs.dtype)

    @property
    def shapes_compiled(self) -> int:
        """How many shapes it has been compiled for."""
        return len(self._compiled)
