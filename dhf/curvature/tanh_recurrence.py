r"""The tanh RNN's two Gv recurrences as fused PyTensor Ops
(the inner loops of the fast path).

:func:`dhf.curvature.recurrent.tanh_rnn_gauss_newton` batches every product with a
tangent or a weight gradient into one GEMM outside the loop; what is left is sequential:

.. math::
    \text{R-forward:}\quad R a_t &= \mathrm{drive}_t + h_{t-1} V_{rec} + R h_{t-1} W_{rec},
        \qquad
        R h_t = (1 - h_t^2) \odot R a_t, \qquad t = 1 \dots T \\
    \text{backward:}\quad \delta a_t &= \mathrm{direct}_t + (1 - h_t^2) \odot \delta h_t,
        \qquad \delta h_{t-1} = \delta a_t W_{rec}^\top, \qquad t = T \dots 1

(Martens & Sutskever 2011, supplement; Pearlmutter 1994).  Written with ``scan``, each
step is a GEMM and several elementwise kernels with their own passes over memory and
per-step bookkeeping; here each step is its GEMMs and one fused loop over the (N, H)
block, compiled by Numba.  With them a Gv of the benchmark RNN (512 rows, T = 50, H = 100,
float32) fell from 38 to 30 ms within an HF update, and reached 57 % of the GEMM rate
(``docs/benchmarks.md``, "What was changed").

The kernels are plain Numba functions.  Under PyTensor's Numba backend they are inlined in
the compiled graph (:func:`_numba_funcify`); under JAX the same recurrences are
``jax.lax.scan`` loops (:func:`register_jax`), which XLA fuses the same way; every other
backend runs the Numba kernels through :meth:`Op.perform`.  They have no gradient: a Gv
product is never differentiated.
"""
from __future__ import annotations

import numba
import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.link.numba.dispatch import basic as numba_basic


def r_forward(drive, h, h_init, Rh_init, W_rec, V_rec):
    """``(R a, R h_T)``: ``R a`` (T, N, H) at every step, ``R h`` at the last one.

    ``drive`` holds each step's input terms; the state's tangent term ``h_{t-1} V_rec`` is
    formed here, step by step, so that no shifted copy of ``h`` is needed.
    """
    T, N, H = drive.shape
    one = np.ones(1, drive.dtype)[0]
    W, V = np.ascontiguousarray(W_rec), np.ascontiguousarray(V_rec)
    Ra = np.empty((T, N, H), drive.dtype)
    Rh = np.ascontiguousarray(Rh_init).copy()
    Rh_W = np.empty((N, H), drive.dtype)
    h_V = np.empty((N, H), drive.dtype)
    for t in range(T):
        np.dot(Rh, W, Rh_W)
        np.dot(np.ascontiguousarray(h_init) if t == 0 else h[t - 1], V, h_V)
        for i in range(N):
            for j in range(H):
                a = drive[t, i, j] + h_V[i, j] + Rh_W[i, j]
                Ra[t, i, j] = a
                Rh[i, j] = (one - h[t, i, j] * h[t, i, j]) * a
    return Ra, Rh


def backward(direct, h, dh_T, W_rec):
    """``(δa, δh_0)``: ``δa`` (T, N, H) for every step from the cotangent ``dh_T`` on
    ``h_T``, and the cotangent on the initial state."""
    T, N, H = direct.shape
    one = np.ones(1, direct.dtype)[0]
    W_T = np.ascontiguousarray(W_rec.T)
    da = np.empty((T, N, H), direct.dtype)
    dh = np.ascontiguousarray(dh_T).copy()
    for t in range(T - 1, -1, -1):
        for i in range(N):
            for j in range(H):
                da[t, i, j] = direct[t, i, j] + (one - h[t, i, j] * h[t, i, j]) * dh[i, j]
        np.dot(da[t], W_T, dh)
    return da, dh


#: Called from :meth:`Op.perform` (backends other than Numba); compiled once per dtype
#: and cached on disk.  No ``fastmath``: it lets LLVM assume that no value is NaN or Inf,
#: so a NaN could come out finite and slip past the optimiser's ``isfinite`` checks
#: (PyTensor's own Numba kernels omit it too).
_compiled = {f: numba.njit(f, cache=True) for f in (r_forward, backward)}


class _TanhRecurrence(Op):
    """A kernel as an Op: its inputs are arrays of the ranks in ``ndims``, its outputs a
    (T, N, H) sequence and an (N, H) state, in the first input's dtype."""

    __props__ = ()
    kernel = None
    ndims: tuple = ()

    def make_node(self, *inputs):
        inputs = [pt.as_tensor_variable(x) for x in inputs]
        if tuple(x.ndim for x in inputs) != self.ndims:
            raise TypeError(f"{type(self).__name__} needs inputs of ndims {self.ndims}, "
                            f"got {tuple(x.ndim for x in inputs)}")
        dtype = inputs[0].dtype
        inputs = [x.astype(dtype) for x in inputs]
        return Apply(self, inputs, [pt.tensor3(dtype=dtype), pt.matrix(dtype=dtype)])

    def perform(self, node, inputs, output_storage):
        for store, value in zip(output_storage, _compiled[type(self).kernel](*inputs)):
            store[0] = value

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[0], (shapes[0][1], shapes[0][2])]


class TanhRForward(_TanhRecurrence):
    """``tanh_r_forward(drive, h, h_init, Rh_init, W_rec, V_rec) -> (Ra, Rh_T)``."""
    kernel = r_forward
    ndims = (3, 3, 2, 2, 2, 2)


class TanhBackward(_TanhRecurrence):
    """``tanh_backward(direct, h, dh_T, W_rec) -> (δa, δh_0)``."""
    kernel = backward
    ndims = (3, 3, 2, 2)


tanh_r_forward = TanhRForward()
tanh_backward = TanhBackward()


@numba_basic.register_funcify_default_op_cache_key(TanhRForward)
@numba_basic.register_funcify_default_op_cache_key(TanhBackward)
def _numba_funcify(op, node=None, **kwargs):
    return numba_basic.numba_njit(type(op).kernel)


def register_jax() -> None:
    """Teach PyTensor's JAX backend the two Ops (called by a worker that compiles under
    JAX; importing JAX is left to those that do).

    Each is a ``jax.lax.scan`` over steps whose body is the step's one GEMM with the
    (N, H) state and its elementwise terms, which XLA fuses into one pass; the R-forward's
    ``h_{t-1} V_rec`` does not wait for the previous step and is one batched GEMM before
    the loop.
    """
    import jax
    import jax.numpy as jnp
    from pytensor.link.jax.dispatch import jax_funcify

    def jax_r_forward(drive, h, h_init, Rh_init, W_rec, V_rec):
        h_prev = jnp.concatenate([h_init[None], h[:-1]])
        d = 1 - h * h

        def step(Rh, drive_d):
            a = drive_d[0] + Rh @ W_rec
            return drive_d[1] * a, a

        Rh_T, Ra = jax.lax.scan(step, Rh_init, (drive + h_prev @ V_rec, d))
        return Ra, Rh_T

    def jax_backward(direct, h, dh_T, W_rec):
        d = 1 - h * h
        W_T = W_rec.T

        def step(dh, direct_d):
            da = direct_d[0] + direct_d[1] * dh
            return da @ W_T, da

        dh_0, da = jax.lax.scan(step, dh_T, (direct, d), reverse=True)
        return da, dh_0

    def typed(fn, node):
        """``fn`` on inputs cast to the Op's dtype: JAX's promotion may hand it float64
        values where PyTensor typed float32, and a scan's carry must keep its type."""
        dtype = node.outputs[0].dtype if node is not None else None
        if dtype is None:
            return fn
        return lambda *inputs: fn(*[jnp.asarray(x, dtype=dtype) for x in inputs])

    for op_type, fn in ((TanhRForward, jax_r_forward), (TanhBackward, jax_backward)):
        jax_funcify.register(op_type)(
            lambda op, node=None, _fn=fn, **kwargs: typed(_fn, node))
