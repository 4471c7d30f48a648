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
from typing import Callable, Sequence

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
    tuple of argument shapes with the inputs replaced by static-shape copies.

    The shared variables ``params`` (the model's parameters, whose shapes never change)
    become inputs too, whose values each call takes from ``param_values()`` (by default
    their shared values): the worker hands JAX arrays it has already placed on the
    device, so that a GPU receives θ once per update rather than once per chunk.  Inputs
    are trusted (PyTensor would copy a JAX array to the host to check it): the caller
    gives each the graph's dtype.  With ``on_device`` the outputs are JAX's own arrays,
    left where they were computed (the forward pass's states, which the Gv calls of the
    update read there); otherwise NumPy arrays.
    """

    def __init__(self, inputs: Sequence, outputs, mode, params: Sequence = (),
                 param_values: Callable[[], list] | None = None, on_device: bool = False,
                 **kwargs):
        self.inputs, self.outputs = list(inputs), outputs
        self.mode, self.kwargs = mode, kwargs
        self.params = list(params)
        self.param_values = param_values or (
            lambda: [p.get_value(borrow=True) for p in self.params])
        self.on_device = on_device
        self._compiled: dict[tuple, pytensor.compile.Function] = {}

    def __call__(self, *args):
        shapes = tuple(np.shape(a) for a in args)
        fn = self._compiled.get(shapes)
        values = self.param_values()
        if fn is None:
            static = [pt.tensor(v.name, dtype=v.dtype, shape=shape)
                      for v, shape in zip(self.inputs, shapes)]
            held = [pt.tensor(p.name, dtype=p.dtype, shape=np.shape(value))
                    for p, value in zip(self.params, values)]
            outputs = clone_replace(self.outputs, {**dict(zip(self.params, held)),
                                                   **dict(zip(self.inputs, static))})
            with _quiet_tracing():
                fn = self._compiled[shapes] = pytensor.function(
                    static + held, outputs, mode=self.mode, **self.kwargs)
                fn.trust_input = True
                out = fn(*args, *values)  # JAX traces and compiles on this first call
        else:
            out = fn(*args, *values)
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
