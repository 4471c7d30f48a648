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
block, compiled by Numba (what that gains: ``docs/benchmarks.md``, "Why the Gv path is
built as it is").

A model read out at every step (``output_steps = "all"``, the masked pathological
problems) has two more kernels that also take the readout inside the loops, where step
t's states are in cache: the R-forward gives :math:`R s_t = R h_t W_{out} + h_t V_{out}`,
and the backward takes the readout's cotangent :math:`u_t` (T, N, O),
:math:`\delta a_t = (1 - h_t^2) \odot (\mathrm{damp}_t + u_t W_{out}^\top + \delta h_t)`,
summing :math:`\nabla W_{out} = \sum_t h_t^\top u_t` on the way.  Outside the loops the
same products each made another pass over the (T, N, H) states.

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


def r_forward_readout(drive, h, h_init, Rh_init, W_rec, V_rec, W_out, V_out):
    """``(R a, R h_T, R s)``: :func:`r_forward` with the readout's tangent at every step,
    ``R s_t = R h_t W_out + h_t V_out`` (T, N, O), taken while step t's states are in
    cache (a model read out at every step, e.g. through a loss mask)."""
    T, N, H = drive.shape
    n_out = W_out.shape[1]
    one = np.ones(1, drive.dtype)[0]
    W, V = np.ascontiguousarray(W_rec), np.ascontiguousarray(V_rec)
    W_o, V_o = np.ascontiguousarray(W_out), np.ascontiguousarray(V_out)
    Ra = np.empty((T, N, H), drive.dtype)
    Rs = np.empty((T, N, n_out), drive.dtype)
    Rh = np.ascontiguousarray(Rh_init).copy()
    Rh_W = np.empty((N, H), drive.dtype)
    h_V = np.empty((N, H), drive.dtype)
    Rh_Wo = np.empty((N, n_out), drive.dtype)
    h_Vo = np.empty((N, n_out), drive.dtype)
    for t in range(T):
        np.dot(Rh, W, Rh_W)
        np.dot(np.ascontiguousarray(h_init) if t == 0 else h[t - 1], V, h_V)
        for i in range(N):
            for j in range(H):
                a = drive[t, i, j] + h_V[i, j] + Rh_W[i, j]
                Ra[t, i, j] = a
                Rh[i, j] = (one - h[t, i, j] * h[t, i, j]) * a
        np.dot(Rh, W_o, Rh_Wo)
        np.dot(np.ascontiguousarray(h[t]), V_o, h_Vo)
        Rs[t] = Rh_Wo + h_Vo
    return Ra, Rh, Rs


def backward_readout(damp, h, dh_T, W_rec, u, W_out):
    """``(δa, δh_0, ∇W_out)``: :func:`backward` with the readout's cotangent ``u``
    (T, N, O) entering at every step, ``δa_t = (1 - h_t²) ⊙ (damp_t + u_t W_outᵀ + δh_t)``,
    and the readout's weight gradient ``Σ_t h_tᵀ u_t`` summed on the way."""
    T, N, H = damp.shape
    one = np.ones(1, damp.dtype)[0]
    W_T = np.ascontiguousarray(W_rec.T)
    Wo_T = np.ascontiguousarray(W_out.T)
    da = np.empty((T, N, H), damp.dtype)
    dh = np.ascontiguousarray(dh_T).copy()
    u_Wo = np.empty((N, H), damp.dtype)
    n_out = W_out.shape[1]
    g_W_out_T = np.zeros((n_out, H), damp.dtype)  # Σ_t u_tᵀ h_t, row by row
    for t in range(T - 1, -1, -1):
        u_t = np.ascontiguousarray(u[t])
        np.dot(u_t, Wo_T, u_Wo)
        for i in range(N):
            for j in range(H):
                da[t, i, j] = (one - h[t, i, j] * h[t, i, j]) * (
                    damp[t, i, j] + u_Wo[i, j] + dh[i, j])
            for o in range(n_out):
                c = u_t[i, o]
                for j in range(H):
                    g_W_out_T[o, j] += h[t, i, j] * c
        np.dot(da[t], W_T, dh)
    g_W_out = np.ascontiguousarray(g_W_out_T.T)
    return da, dh, g_W_out


#: Called from :meth:`Op.perform` (backends other than Numba); compiled once per dtype
#: and cached on disk.  No ``fastmath``: it lets LLVM assume that no value is NaN or Inf,
#: so a NaN could come out finite and slip past the optimiser's ``isfinite`` checks
#: (PyTensor's own Numba kernels omit it too).
_compiled = {f: numba.njit(f, cache=True)
             for f in (r_forward, backward, r_forward_readout, backward_readout)}


class _TanhRecurrence(Op):
    """A kernel as an Op: its inputs are arrays of the ranks in ``ndims``, its outputs a
    (T, N, H) sequence, an (N, H) state and, with a readout, the readout's (T, N, O)
    tangent or (H, O) gradient, in the first input's dtype."""

    __props__ = ()
    kernel = None
    ndims: tuple = ()
    readout = False

    def make_node(self, *inputs):
        inputs = [pt.as_tensor_variable(x) for x in inputs]
        if tuple(x.ndim for x in inputs) != self.ndims:
            raise TypeError(f"{type(self).__name__} needs inputs of ndims {self.ndims}, "
                            f"got {tuple(x.ndim for x in inputs)}")
        dtype = inputs[0].dtype
        inputs = [x.astype(dtype) for x in inputs]
        outputs = [pt.tensor3(dtype=dtype), pt.matrix(dtype=dtype)]
        if self.readout:
            outputs.append(self.readout_type(dtype))
        return Apply(self, inputs, outputs)

    def perform(self, node, inputs, output_storage):
        for store, value in zip(output_storage, _compiled[type(self).kernel](*inputs)):
            store[0] = value

    def infer_shape(self, fgraph, node, shapes):
        T, N, H = shapes[0]
        out = [shapes[0], (N, H)]
        if self.readout:
            out.append(self.readout_shape(shapes))
        return out


class TanhRForward(_TanhRecurrence):
    """``tanh_r_forward(drive, h, h_init, Rh_init, W_rec, V_rec) -> (Ra, Rh_T)``."""
    kernel = r_forward
    ndims = (3, 3, 2, 2, 2, 2)


class TanhBackward(_TanhRecurrence):
    """``tanh_backward(direct, h, dh_T, W_rec) -> (δa, δh_0)``."""
    kernel = backward
    ndims = (3, 3, 2, 2)


class TanhRForwardReadout(_TanhRecurrence):
    """``tanh_r_forward_readout(drive, h, h_init, Rh_init, W_rec, V_rec, W_out, V_out)
    -> (Ra, Rh_T, Rs)``."""
    kernel = r_forward_readout
    ndims = (3, 3, 2, 2, 2, 2, 2, 2)
    readout = True

    @staticmethod
    def readout_type(dtype):
        return pt.tensor3(dtype=dtype)

    @staticmethod
    def readout_shape(shapes):
        T, N, _ = shapes[0]
        return (T, N, shapes[6][1])


class TanhBackwardReadout(_TanhRecurrence):
    """``tanh_backward_readout(damp, h, dh_T, W_rec, u, W_out) -> (δa, δh_0, ∇W_out)``."""
    kernel = backward_readout
    ndims = (3, 3, 2, 2, 3, 2)
    readout = True

    @staticmethod
    def readout_type(dtype):
        return pt.matrix(dtype=dtype)

    @staticmethod
    def readout_shape(shapes):
        return (shapes[0][2], shapes[5][1])


tanh_r_forward = TanhRForward()
tanh_backward = TanhBackward()
tanh_r_forward_readout = TanhRForwardReadout()
tanh_backward_readout = TanhBackwardReadout()


@numba_basic.register_funcify_default_op_cache_key(TanhRForward)
@numba_basic.register_funcify_default_op_cache_key(TanhBackward)
@numba_basic.register_funcify_default_op_cache_key(TanhRForwardReadout)
@numba_basic.register_funcify_default_op_cache_key(TanhBackwardReadout)
def _numba_funcify(op, node=None, **kwargs):
    return numba_basic.numba_njit(type(op).kernel)


def register_jax() -> None:
    """Teach PyTensor's JAX backend the Ops (called by a worker that compiles under
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

    # With a readout at every step, its products batched outside the loops (XLA fuses
    # them with the loops' inputs and outputs).
    def jax_r_forward_readout(drive, h, h_init, Rh_init, W_rec, V_rec, W_out, V_out):
        Ra, Rh_T = jax_r_forward(drive, h, h_init, Rh_init, W_rec, V_rec)
        return Ra, Rh_T, ((1 - h * h) * Ra) @ W_out + h @ V_out

    def jax_backward_readout(damp, h, dh_T, W_rec, u, W_out):
        da, dh_0 = jax_backward((1 - h * h) * (damp + u @ W_out.T), h, dh_T, W_rec)
        return da, dh_0, jnp.einsum("tnh,tno->ho", h, u)

    def typed(fn, node):
        """``fn`` on inputs cast to the Op's dtype: JAX's promotion may hand it float64
        values where PyTensor typed float32, and a scan's carry must keep its type."""
        dtype = node.outputs[0].dtype if node is not None else None
        if dtype is None:
            return fn
        return lambda *inputs: fn(*[jnp.asarray(x, dtype=dtype) for x in inputs])

    for op_type, fn in ((TanhRForward, jax_r_forward), (TanhBackward, jax_backward),
                        (TanhRForwardReadout, jax_r_forward_readout),
                        (TanhBackwardReadout, jax_backward_readout)):
        jax_funcify.register(op_type)(
            lambda op, node=None, _fn=fn, **kwargs: typed(_fn, node))
