"""Independent numpy references for the curvature tests: central finite differences
of a compiled function in the flat parameters, the analytic Hessian of each loss in its
output, and one comparison rule."""
import numpy as np

FD_EPS = 1e-5
RTOL = 1e-6


def get_theta(params):
    return np.concatenate([p.get_value().ravel() for p in params])


def set_theta(params, theta):
    offset = 0
    for p in params:
        shape = p.get_value().shape
        size = int(np.prod(shape))
        p.set_value(theta[offset:offset + size].reshape(shape).copy())
        offset += size


def fd_jacobian(fn, params, theta, eps=FD_EPS):
    """Central-difference Jacobian of ``fn().ravel()`` in the flat parameters ``theta``.

    The parameters' values are restored afterwards.
    """
    saved = [p.get_value() for p in params]
    try:
        columns = []
        for i in range(theta.size):
            step = np.zeros_like(theta)
            step[i] = eps
            set_theta(params, theta + step)
            plus = np.asarray(fn()).ravel()
            set_theta(params, theta - step)
            minus = np.asarray(fn()).ravel()
            columns.append((plus - minus) / (2 * eps))
    finally:
        for p, value in zip(params, saved):
            p.set_value(value)
    return np.stack(columns, axis=1)


def loss_hessian(name, s):
    """Analytic Hessian in ``s.ravel()``: block-diagonal, one block per output vector."""
    rows = np.asarray(s).reshape(-1, s.shape[-1])
    if name == "squared_error":
        blocks = [np.eye(rows.shape[1]) for _ in rows]
    elif name == "sigmoid_xent":
        blocks = [np.diag(p * (1 - p)) for p in 1 / (1 + np.exp(-rows))]
    elif name == "softmax_xent":
        e = np.exp(rows - rows.max(axis=1, keepdims=True))
        blocks = [np.diag(p) - np.outer(p, p) for p in e / e.sum(axis=1, keepdims=True)]
    else:
        raise ValueError(name)
    H = np.zeros((rows.size, rows.size))
    k = rows.shape[1]
    for i, block in enumerate(blocks):
        H[i * k:(i + 1) * k, i * k:(i + 1) * k] = block
    return H


def one_hot(rng, shape, k):
    return np.eye(k)[rng.integers(0, k, shape)]


def assert_close_to(actual, expected, rtol=RTOL):
    """Entrywise ``rtol`` with an absolute floor at ``rtol`` times the largest entry."""
    np.testing.assert_allclose(actual, expected, rtol=rtol,
                               atol=rtol * np.abs(expected).max())
