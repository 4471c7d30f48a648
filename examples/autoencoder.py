"""Train your own PyTensor graph with dhf: the tied-weight autoencoder of "Fun with Theano"
(seeds/004), with cross-entropy on binary data, then export its parameters.

    python examples/autoencoder.py                  # one process
    mpirun -n 2 python examples/autoencoder.py      # the same script, batches over 2 ranks
    python examples/autoencoder.py --updates 5 --out runs/ae

The data are scikit-learn's 8×8 digits, binarised (sparse-ish binary vectors like the
post's), where scikit-learn is installed (``pip install -e '.[digits]'``); otherwise
binary patterns made here, ten prototypes with 5 % of their pixels flipped.  Writes
params.npz and params.json (parameters by name) into --out (runs/autoencoder) on rank 0.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt

import dhf
from dhf.comm import get_comm


def binary_images(n: int = 1797, pixels: int = 64) -> tuple[np.ndarray, str]:
    """scikit-learn's digits as binary images, or, without scikit-learn, noisy copies of
    ten random binary prototypes (the same on every rank: seeded)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        rng = np.random.default_rng(0)
        prototypes = rng.random((10, pixels)) < 0.3
        flips = rng.random((n, pixels)) < 0.05
        return (prototypes[rng.integers(0, 10, n)] ^ flips).astype(float), "patterns"
    return (load_digits().data > 8).astype(float), "digits"  # 1797 × 64 binary pixels


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--updates", type=int, default=20)
parser.add_argument("--out", default="runs/autoencoder", help="where the parameters go")
args = parser.parse_args()
comm = get_comm()  # MPI under mpirun, else one process: the script is the same
X, source = binary_images()
X_train, X_valid = X[:1500], X[1500:]
n_visible, n_hidden = X.shape[1], 32

# The parameters are shared variables, as in the post: W is used twice (tied weights).
rng = np.random.default_rng(0)
W = pytensor.shared(rng.normal(0, 0.1, (n_visible, n_hidden)), name="W")
b_h = pytensor.shared(np.zeros(n_hidden), name="b_h")  # hidden bias
b_v = pytensor.shared(np.zeros(n_visible), name="b_v")  # visible bias

x = pt.matrix("x")
h = pt.sigmoid(pt.dot(x, W) + b_h)
s = pt.dot(h, W.T) + b_v  # x_hat = sigmoid(s): split at s, where the loss applies

# binary_crossentropy(sigmoid(s), x) is "sigmoid_xent" on s; the targets are the input.
spec = dhf.ModelSpec(inputs=[x], targets=x, params=[W, b_h, b_v], output=s,
                     loss="sigmoid_xent")
result = dhf.train(spec, train=X_train, valid=X_valid, config={
    "optimizer": {"max_updates": args.updates, "gradient_batch": 1000,
                  "curvature_batch": 200, "backtrack_batch": 300, "init_damping": 1.0},
    "run": {"stop_valid_error": -1.0},  # no early stop: train all updates
}, comm=comm)

# Every rank holds the same result; rank 0 reports and exports it.
if comm.rank == 0:
    first, last = result.metrics[0]["loss"], result.metrics[-1]["loss"]
    print(f"cross-entropy per image ({source}): {first:.2f} -> {last:.2f} in "
          f"{result.updates} updates")
    # Portable files, parameters by name (W is stored once; it is tied).
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "params.npz", **result.params)
    with open(out / "params.json", "w") as f:
        json.dump({name: value.tolist() for name, value in result.params.items()}, f)
    print(f"parameters in {out / 'params.npz'} and {out / 'params.json'}")
