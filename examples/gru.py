"""Train your own recurrent graph with dhf: a GRU written with ``pytensor.scan`` (no
built-in model), on remembering the first of T random bits.

    python examples/gru.py                          # one process, up to 20 updates
    mpirun -n 2 python examples/gru.py --updates 5  # the same script over 2 ranks
    python examples/gru.py --backend numba          # run.backend: auto, jax, numba, c

dhf computes its Gauss-Newton products through the graph's pushforward and pullback
(the generic path): any differentiable graph trains, and this one compiles like the
built-in LSTM (``docs/benchmarks.md``, "Start-up").  Rank 0 prints the start line, a
line per update and the final error rate.
"""
import argparse

import numpy as np
import pytensor
import pytensor.tensor as pt

import dhf
from dhf.comm import get_comm


def gru(n_in: int, n_hidden: int, n_out: int, seed: int = 0,
        t_max: int | None = None) -> dhf.ModelSpec:
    r"""A GRU (Cho et al. 2014, in the form of Chung et al. 2014) read out at the last
    step:

    .. math::
        z_t = \sigma(x_t W_z + h_{t-1} U_z + b_z), \quad
        r_t = \sigma(x_t W_r + h_{t-1} U_r + b_r), \\
        c_t = \tanh(x_t W_c + (r_t \odot h_{t-1}) U_c + b_c), \quad
        h_t = (1 - z_t) \odot h_{t-1} + z_t \odot c_t, \quad s = h_T W_{out} + b_{out}

    With ``t_max``, the update gate's bias starts at :math:`b_z = -\log u`,
    :math:`u \sim U(1, t_{max} - 1)` per unit (Tallec & Ollivier 2018's "chrono"
    initialisation): each unit first keeps its state for about 1 to ``t_max`` steps,
    rather than forgetting half of it at every step (:math:`b_z = 0`).
    """
    rng = np.random.default_rng(seed)
    H = n_hidden

    def shared(name, *shape):
        scale = 1.0 / np.sqrt(shape[0]) if len(shape) == 2 else 0.0
        return pytensor.shared(scale * rng.standard_normal(shape), name=name)

    # One weight matrix per gate and source: slicing a joint matrix inside the step would
    # put shapes computed at run time in the scan's gradient, which JAX cannot compile.
    W = {g: shared(f"W_{g}", n_in, H) for g in "zrc"}
    U = {g: shared(f"U_{g}", H, H) for g in "zrc"}
    b = {g: shared(f"b_{g}", H) for g in "zrc"}
    if t_max is not None:
        b["z"].set_value(-np.log(rng.uniform(1.0, t_max - 1.0, H)))
    W_out, b_out = shared("W_out", H, n_out), shared("b_out", n_out)
    x = pt.tensor3("x")  # (rows, T, n_in)
    y = pt.matrix("y")  # (rows, n_out): 0/1 targets
    # every step's input terms at once, outside the loop: (T, rows, H) per gate
    x_z, x_r, x_c = ((pt.dot(x, W[g]) + b[g]).dimshuffle(1, 0, 2) for g in "zrc")

    def step(xz, xr, xc, h):
        z = pt.sigmoid(xz + pt.dot(h, U["z"]))
        r = pt.sigmoid(xr + pt.dot(h, U["r"]))
        c = pt.tanh(xc + pt.dot(r * h, U["c"]))
        return (1 - z) * h + z * c

    h = pytensor.scan(step, sequences=[x_z, x_r, x_c],
                      outputs_info=pt.zeros((x.shape[0], H)), return_updates=False)
    s = pt.dot(h[-1], W_out) + b_out  # sigmoid(s) is the prediction
    params = [*W.values(), *U.values(), *b.values(), W_out, b_out]
    return dhf.ModelSpec(inputs=[x], targets=y, params=params, output=s,
                         loss="sigmoid_xent")


def first_bit(n: int, T: int, rng) -> list[np.ndarray]:
    """``[x (n, T, 1), y (n, 1)]``: T random bits, and the first of them."""
    x = rng.integers(0, 2, size=(n, T, 1)).astype(float)
    return [x, x[:, 0].copy()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--T", type=int, default=20)
    parser.add_argument("--backend", default="auto", help="run.backend")
    parser.add_argument("--out", default=None, help="run directory (default: none kept)")
    args = parser.parse_args()

    rng = np.random.default_rng(1)
    result = dhf.train(gru(1, 32, 1, t_max=args.T), train=first_bit(4000, args.T, rng),
                       valid=first_bit(1000, args.T, rng), out=args.out, config={
                           "optimizer": {"max_updates": args.updates},
                           "run": {"backend": args.backend}})
    if get_comm().rank == 0:  # every rank holds the same result
        print(f"{result.valid_error:.1%} of the validation rows wrong after "
              f"{result.updates} updates")


if __name__ == "__main__":
    main()
