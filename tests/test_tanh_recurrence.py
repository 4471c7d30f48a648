"""The fused Gv recurrences of the tanh RNN against the recurrences written out in NumPy.

The Ops are also checked end to end, inside the explicit Gv, against a dense ``JᵀHJ``
(tests/test_gauss_newton.py, tests/test_nets.py); here each kernel is checked alone, in
both dtypes, on the Numba backend, through ``Op.perform`` and as ``jax.lax.scan`` loops
(where JAX is installed), with strided inputs.
"""
import importlib.util

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from dhf.curvature.tanh_recurrence import (register_jax, tanh_backward,
                                           tanh_backward_readout, tanh_r_forward,
                                           tanh_r_forward_readout)

MODES = ["NUMBA", "FAST_COMPILE"] + (["JAX"] if importlib.util.find_spec("jax") else [])

T, N, H, N_OUT = 5, 3, 4, 2


def reference_r_forward(drive, h, h_init, Rh_init, W_rec, V_rec):
    Ra, Rh, h_prev = [], Rh_init, h_init
    for t in range(len(drive)):
        Ra.append(drive[t] + h_prev @ V_rec + Rh @ W_rec)
        Rh, h_prev = (1 - h[t] ** 2) * Ra[-1], h[t]
    return np.array(Ra), Rh


def reference_backward(direct, h, dh_T, W_rec):
    da, dh = [None] * len(direct), dh_T
    for t in reversed(range(len(direct))):
        da[t] = direct[t] + (1 - h[t] ** 2) * dh
        dh = da[t] @ W_rec.T
    return np.array(da), dh


def reference_r_forward_readout(drive, h, h_init, Rh_init, W_rec, V_rec, W_out, V_out):
    """R s_t = R y_t W_out + y_t V_out, with R y_t = (1 - h_t²) R a_t."""
    Ra, Rh = reference_r_forward(drive, h, h_init, Rh_init, W_rec, V_rec)
    Rs = np.array([((1 - h[t] ** 2) * Ra[t]) @ W_out + h[t] @ V_out for t in range(len(h))])
    return Ra, Rh, Rs


def reference_backward_readout(damp, h, dh_T, W_rec, u, W_out):
    """The cotangent u_t W_outᵀ on h_t and the damping term on a_t, then backward."""
    direct = (1 - h ** 2) * (damp + u @ W_out.T)
    da, dh = reference_backward(direct, h, dh_T, W_rec)
    return da, dh, sum(h[t].T @ u[t] for t in range(len(h)))


def _inputs(rng, dtype):
    """Arrays of the right shapes; the sequences are strided views (every other step)."""
    seq = lambda: rng.standard_normal((2 * T, N, H)).astype(dtype)[::2]  # noqa: E731
    mat = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    h = np.tanh(seq())
    u = rng.standard_normal((2 * T, N, N_OUT)).astype(dtype)[::2]
    forward = (seq(), h, np.tanh(mat(N, H)), mat(N, H), mat(H, H), mat(H, H))
    backward = (seq(), h, mat(N, H), mat(H, H))
    return {"forward": forward, "backward": backward,
            "forward_readout": forward + (mat(H, N_OUT), mat(H, N_OUT)),
            "backward_readout": backward + (u, mat(H, N_OUT))}


OPS = {"forward": (tanh_r_forward, reference_r_forward),
       "backward": (tanh_backward, reference_backward),
       "forward_readout": (tanh_r_forward_readout, reference_r_forward_readout),
       "backward_readout": (tanh_backward_readout, reference_backward_readout)}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("which", list(OPS))
def test_kernel_matches_numpy_recurrence(which, dtype, mode):
    if mode == "JAX":
        register_jax()
    op, reference = OPS[which]
    arrays = _inputs(np.random.default_rng(0), dtype)[which]
    symbols = [pt.tensor(dtype=dtype, shape=(None,) * a.ndim) for a in arrays]
    outputs = op(*symbols)
    fn = pytensor.function(symbols, outputs, mode=mode)
    got = fn(*arrays)
    want = reference(*[a.astype(np.float64) for a in arrays])
    assert len(got) == len(want) == (3 if "readout" in which else 2)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for value, expected, symbol in zip(got, want, outputs):
        assert value.dtype == dtype and value.shape == expected.shape
        np.testing.assert_allclose(value, expected, rtol=tol, atol=tol)
    # the shapes PyTensor infers without running the kernels
    shapes = pytensor.function(symbols, [o.shape for o in outputs], mode="FAST_COMPILE",
                               on_unused_input="ignore")(*arrays)
    assert [tuple(s) for s in shapes] == [e.shape for e in want]


def test_wrong_ranks_are_refused():
    with pytest.raises(TypeError, match="ndims"):
        tanh_backward(pt.matrix(), pt.tensor3(), pt.matrix(), pt.matrix())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("which", list(OPS))
def test_nan_and_inf_come_out_as_nan_or_inf(which, mode):
    """A NaN or Inf in the state must reach the optimiser's isfinite checks: the kernels
    are compiled without fastmath, which would let LLVM assume there are none."""
    from dhf.curvature import tanh_recurrence

    if mode == "JAX":
        register_jax()
    kernels = tanh_recurrence._compiled.values()
    assert not any(f.targetoptions.get("fastmath") for f in kernels)
    op = OPS[which][0]
    arrays = [a.copy() for a in _inputs(np.random.default_rng(1), "float64")[which]]
    arrays[0][2, 1, 0] = np.nan
    arrays[0][3, 0, 1] = np.inf
    symbols = [pt.tensor(dtype="float64", shape=(None,) * a.ndim) for a in arrays]
    sequence, state, *readout = pytensor.function(symbols, op(*symbols), mode=mode)(*arrays)
    assert not np.isfinite(sequence).all() and not np.isfinite(state).all()
    if which == "forward_readout":  # R s reads R h (∇W_out reads neither)
        assert not np.isfinite(readout[0]).all()
