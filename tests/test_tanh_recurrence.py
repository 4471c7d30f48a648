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

from dhf.curvature.tanh_recurrence import register_jax, tanh_backward, tanh_r_forward

MODES = ["NUMBA", "FAST_COMPILE"] + (["JAX"] if importlib.util.find_spec("jax") else [])

T, N, H = 5, 3, 4


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


def _inputs(rng, dtype):
    """Arrays of the right shapes; the sequences are strided views (every other step)."""
    seq = lambda: rng.standard_normal((2 * T, N, H)).astype(dtype)[::2]  # noqa: E731
    mat = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    h = np.tanh(seq())
    return {"forward": (seq(), h, np.tanh(mat(N, H)), mat(N, H), mat(H, H), mat(H, H)),
            "backward": (seq(), h, mat(N, H), mat(H, H))}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("which", ["forward", "backward"])
def test_kernel_matches_numpy_recurrence(which, dtype, mode):
    if mode == "JAX":
        register_jax()
    op, reference = {"forward": (tanh_r_forward, reference_r_forward),
                     "backward": (tanh_backward, reference_backward)}[which]
    arrays = _inputs(np.random.default_rng(0), dtype)[which]
    symbols = [pt.tensor(dtype=dtype, shape=(None,) * a.ndim) for a in arrays]
    fn = pytensor.function(symbols, op(*symbols), mode=mode)
    sequence, state = fn(*arrays)
    want_sequence, want_state = reference(*[a.astype(np.float64) for a in arrays])
    assert sequence.dtype == state.dtype == dtype
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(sequence, want_sequence, rtol=tol, atol=tol)
    np.testing.assert_allclose(state, want_state, rtol=tol, atol=tol)


def test_wrong_ranks_are_refused():
    with pytest.raises(TypeError, match="ndims"):
        tanh_backward(pt.matrix(), pt.tensor3(), pt.matrix(), pt.matrix())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("which", ["forward", "backward"])
def test_nan_and_inf_come_out_as_nan_or_inf(which, mode):
    """A NaN or Inf in the state must reach the optimiser's isfinite checks: the kernels
    are compiled without fastmath, which would let LLVM assume there are none."""
    from dhf.curvature import tanh_recurrence

    if mode == "JAX":
        register_jax()
    kernels = tanh_recurrence._compiled.values()
    assert not any(f.targetoptions.get("fastmath") for f in kernels)
    op = {"forward": tanh_r_forward, "backward": tanh_backward}[which]
    arrays = [a.copy() for a in _inputs(np.random.default_rng(1), "float64")[which]]
    arrays[0][2, 1, 0] = np.nan
    arrays[0][3, 0, 1] = np.inf
    symbols = [pt.tensor(dtype="float64", shape=(None,) * a.ndim) for a in arrays]
    sequence, state = pytensor.function(symbols, op(*symbols), mode=mode)(*arrays)
    assert not np.isfinite(sequence).all() and not np.isfinite(state).all()
