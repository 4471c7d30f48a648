r"""Seeded weight initialisations for the built-in nets.

Every initialiser is ``fn(rng, shape, ...) -> np.ndarray`` with ``rng`` a
:class:`numpy.random.Generator`, so a seed fixes every weight.  Weight matrices follow the
``x @ W`` convention: ``shape = (fan_in, fan_out)``, one *column* per receiving unit.

Scales
------
When ``scale`` is not given it is normalised by the fan-in, so that a unit whose inputs
have unit variance gets a pre-activation of standard deviation about 1 (LeCun et al. 1998):

==============  ===========================================  ==============================
name            weights                                      default ``scale``
==============  ===========================================  ==============================
``sparse``      ``min(n_connections, fan_in)`` nonzero       1/√n_connections
                N(0, scale²) per column, the rest 0
``gaussian``    N(0, scale²)                                 1/√fan_in
``uniform``     U(−scale, scale)                             √(3/fan_in)
``orthogonal``  ``gain`` × a (semi-)orthogonal matrix         gain 1
==============  ===========================================  ==============================

The recipes of the Hessian-free literature (Martens 2010, §5; Martens & Sutskever 2011
and Sutskever's released HF-RNN code, ``opt/r/demo.py``):

- **Martens (2010)**, deep autoencoders: sparse, 15 incoming connections per unit drawn from
  a *unit* Gaussian, biases 0: ``sparse(rng, shape, 15, scale=1.0)``.
- **Martens & Sutskever (2011)**, Sutskever's released HF-RNN code (``opt/r/demo.py``:
  ``model.initialize_self(num_in=15, scale=1./15**0.5)`` and ``opt/utils/extra.py``
  ``sparsify_strict``): sparse, 15 connections, scale 1/√15 (this module's default) whatever
  the fan-in (a unit with 15 inputs or fewer keeps them all, still at 1/√15), every
  matrix including the recurrent one; then the input-to-hidden weights are multiplied by
  **0.25** ("a VERY IMPORTANT LINE": large input weights overwhelm the hidden state and the
  gradients from the past vanish).
- **Sutskever, Martens, Dahl & Hinton (2013)**, Table 4: recurrent weights rescaled to
  spectral radius **1.1** (:func:`spectral_radius`); input weights N(0, **0.001²**) for the
  addition and multiplication problems and N(0, **0.1²**) for memorisation.
- A dense N(0, 1/15) recurrent matrix has spectral radius about 2.6 at 100 units: the
  dynamics are chaotic and Jv reaches 1e44 at T = 200 (§5.5).  Rescale it.

Input scaling is a plain multiplier on the input-to-hidden matrix (the builders'
``input_scale``): 0.25 after the sparse init, or an absolute N(0, σ²) with
``initialise(rng, shape, {"name": "gaussian", "scale": 0.001})``.

:func:`initialise` dispatches on a name, so a config can say ``init = "sparse"`` or
``init = {name = "uniform", scale = 0.2}``.
"""
from __future__ import annotations

import inspect
from typing import Callable, Mapping

import numpy as np

from dhf.errors import UserError

#: Incoming connections per unit in the sparse initialisation (Martens 2010).
N_CONNECTIONS = 15


def _fan_in(shape) -> int:
    shape = tuple(shape)
    if len(shape) != 2:
        raise ValueError("weight initialisers take a 2-D (fan_in, fan_out) shape, "
                         f"got {shape}")
    return shape[0]


def sparse(rng: np.random.Generator, shape, n_connections: int = N_CONNECTIONS,
           scale: float | None = None) -> np.ndarray:
    r"""Martens' (2010, §5) sparse initialisation.

    Each unit (column) gets exactly ``min(n_connections, fan_in)`` nonzero incoming
    weights at rows chosen uniformly without replacement, drawn from N(0, scale²); every
    other weight is exactly 0.  Martens draws from a unit Gaussian (``scale=1``);
    Sutskever's HF-RNN code uses ``scale = 1/√15`` (``sparsify_strict(W, 15, 1/√15, 0)``),
    the default here (``1/√n_connections``).  The scale does not grow when the fan-in is
    below ``n_connections``: ``sparsify_strict`` multiplies every weight by 1/√15 and
    zeroes all but 15 per column, so a 2-input unit keeps both weights at N(0, 1/15).
    (Normalising by the kept count instead would make a 2-input problem's input weights
    2.7 × larger, and with the 0.25 input scale that fades the state's memory of the
    first operand 6.5-fold at initialisation.)

    Limiting the fan-in rather than the scale lets units differ from each other without
    saturating (Martens 2010): a dense init of the same per-weight scale would sum
    hundreds of inputs.
    """
    fan_in, fan_out = _fan_in(shape), shape[1]
    k = min(int(n_connections), fan_in)
    if k < 1:
        raise ValueError(f"n_connections must be at least 1, got {n_connections}")
    if scale is None:
        scale = 1.0 / np.sqrt(n_connections)
    W = np.zeros((fan_in, fan_out))
    for j in range(fan_out):
        rows = rng.choice(fan_in, size=k, replace=False)
        W[rows, j] = scale * rng.standard_normal(k)
    return W


def gaussian(rng: np.random.Generator, shape, scale: float | None = None) -> np.ndarray:
    """Dense N(0, scale²) weights; ``scale`` defaults to 1/√fan_in (LeCun et al. 1998)."""
    if scale is None:
        scale = 1.0 / np.sqrt(_fan_in(shape))
    return scale * rng.standard_normal(tuple(shape))


def uniform(rng: np.random.Generator, shape, scale: float | None = None) -> np.ndarray:
    """Dense U(−scale, scale) weights; ``scale`` defaults to √(3/fan_in) (unit variance
    per unit).  theano-hf's ``simple_RNN`` uses ``scale=0.2`` at 100 units."""
    if scale is None:
        scale = np.sqrt(3.0 / _fan_in(shape))
    return rng.uniform(-scale, scale, tuple(shape))


def orthogonal(rng: np.random.Generator, shape, gain: float = 1.0) -> np.ndarray:
    r"""A random (semi-)orthogonal matrix times ``gain`` (Saxe, McClelland & Ganguli 2014).

    ``Q`` from the QR factorisation of a Gaussian matrix, its columns' signs fixed by
    ``sign(diag R)`` so that ``Q`` is Haar-distributed (Mezzadri 2007).  A square result
    is orthogonal (all singular values and eigenvalue moduli equal ``gain``); a
    rectangular one has orthonormal rows or columns, whichever are fewer.
    """
    rows, cols = _fan_in(shape), shape[1]
    A = rng.standard_normal((max(rows, cols), min(rows, cols)))
    Q, R = np.linalg.qr(A)
    Q = Q * np.where(np.diag(R) < 0, -1.0, 1.0)
    return gain * (Q if rows >= cols else Q.T)


def spectral_radius(W: np.ndarray, rho: float) -> np.ndarray:
    r"""``W`` rescaled so that :math:`\max_i |\lambda_i(W)| = \rho`.

    The spectral radius of the recurrent matrix sets whether a linearised RNN forgets
    (ρ < 1) or explodes (ρ > 1); Sutskever et al. (2013) start at ρ = 1.1 (Jaeger &
    Haas 2004 for echo-state networks).
    """
    W = np.asarray(W)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"spectral_radius needs a square matrix, got shape {W.shape}")
    radius = np.max(np.abs(np.linalg.eigvals(W)))
    if not radius > 0:
        raise UserError("cannot rescale a matrix whose spectral radius is 0 (all its "
                        "eigenvalues vanish); use a denser initialisation")
    return W * (rho / radius)


#: The initialisers :func:`initialise` knows by name.
INITIALISERS: dict[str, Callable] = {
    "sparse": sparse,
    "gaussian": gaussian,
    "uniform": uniform,
    "orthogonal": orthogonal,
}


def parse(spec) -> tuple[Callable, dict]:
    """``(function, keyword arguments)`` from an init spec.

    ``spec`` is a name (``"sparse"``), a mapping ``{"name": "sparse", "n_connections":
    10}`` (what a TOML table gives), or a callable ``fn(rng, shape) -> array``.
    """
    if callable(spec):
        return spec, {}
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, Mapping):
        if "name" not in spec:
            raise UserError(f"an init table needs a 'name' key ({', '.join(INITIALISERS)}),"
                            f" got {dict(spec)}")
        options = dict(spec)
        name = options.pop("name")
    else:
        raise UserError(f"init must be a name, a table with a 'name' or a callable, "
                        f"got {spec!r}")
    if name not in INITIALISERS:
        raise UserError(f"unknown init {name!r}; expected one of {', '.join(INITIALISERS)}")
    fn = INITIALISERS[name]
    allowed = list(inspect.signature(fn).parameters)[2:]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserError(f"init {name!r} takes {', '.join(allowed)}; unknown: "
                        f"{', '.join(unknown)}")
    return fn, options


def initialise(rng: np.random.Generator, shape, spec="gaussian", *, gain: float = 1.0,
               **options) -> np.ndarray:
    """``gain × fn(rng, shape, **options)`` for the init named by ``spec`` (see
    :func:`parse`).

    ``options`` add to (and override) the spec's own keyword arguments; ``gain`` is the
    builders' ``init_scale``, a multiplier on top of the (fan-in normalised) scale.
    """
    fn, spec_options = parse(spec)
    return gain * np.asarray(fn(rng, tuple(shape), **{**spec_options, **options}))
