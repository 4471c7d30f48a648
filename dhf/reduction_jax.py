"""The exact sums of :mod:`dhf.reduction` as JAX code, with the host's bits.

For vectors that live where JAX computes (a GPU's memory, or JAX's CPU device in CI):
a looped call's chunks split and added where they are computed (:func:`split_traced`),
and the exact dot product of CG's vectors, of which only the largest product and each
group's ``BINS`` bin sums leave the device (:func:`largest_product`,
:func:`dot_pieces`, :func:`dot`: the same names and values as :mod:`dhf.reduction`'s, so
:func:`dhf.allreduce.dot_sliced` takes either module).

Every value is the host's bit for bit: the same float64 operations, each rounded once
(XLA contracts nothing into fused multiply-adds on a CPU, and the extraction's rounding
is kept from its simplifier, below), and sums of bin parts are exact in any order.  One
exception: XLA computes with subnormal numbers (below 2.2e-308) flushed to zero, so a
product that small counts as 0 here and not on the host; every rank computes on the
device alike, so the bits still do not depend on the rank count.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dhf import reduction
from dhf.reduction import _DOT_GROUP, _SHIFTERS, BINS

_LARGEST_FINITE = float(np.finfo(np.float64).max)


def split_traced(x):
    """:func:`dhf.reduction.split` of one vector inside a JAX function: the ``(BINS, n)``
    float64 parts of ``x``, by the operations of :func:`dhf.reduction._add_parts`.  A
    looped call (:class:`dhf.static_shapes.LoopedJAXLinker`) adds its chunks' parts where
    it computes them, exactly (:class:`dhf.reduction.Parts`), and hands back ``BINS``
    values a parameter instead of one per chunk.

    XLA's simplifier folds ``(r + M) − M`` to ``r``; the optimisation barrier keeps the
    rounding ``r + M`` as an operation whose result is not seen through.
    """
    r = jnp.asarray(x).astype(jnp.float64)
    parts = []
    for shifter in _SHIFTERS:
        q = lax.optimization_barrier(r + shifter) - shifter
        r = r - q
        parts.append(q)
    return jnp.stack(parts)


@jax.jit
def _largest_product(a, b):
    p = jnp.abs(a.astype(jnp.float64) * b.astype(jnp.float64))
    return jnp.where(jnp.all(p <= _LARGEST_FINITE), jnp.max(p, initial=0.0), jnp.inf)


def largest_product(a, b) -> float:
    """``max |a_j b_j|``, or Inf where a product is not finite
    (:func:`dhf.reduction.largest_product`)."""
    return float(_largest_product(a, b)) if a.size else 0.0


@functools.partial(jax.jit, static_argnames="groups")
def _dot_bins(a, b, start, groups, scale_up, scale_down):
    """:func:`dhf.reduction._dot_bins`: each group's exact bin sums of the products
    scaled by ``2**shift`` (in two exact steps), ``(groups, BINS)``."""
    scaled = (a.astype(jnp.float64) * b.astype(jnp.float64) * scale_up) * scale_down
    group = (start + jnp.arange(a.size)) // _DOT_GROUP
    return jax.ops.segment_sum(split_traced(scaled).T, group, num_segments=groups)


def dot_pieces(a, b, start: int, n: int, largest: float) -> np.ndarray:
    """:func:`dhf.reduction.dot_pieces` of device vectors: the exact bins of values
    ``start …`` of two ``n``-vectors whose largest product is ``largest``; only the
    bins come back to the host."""
    groups = reduction._groups(n)
    if a.size != b.size or not 0 <= start <= start + a.size <= n:
        raise ValueError(f"dot_pieces: {a.size} and {b.size} values at {start} of {n}")
    if not 0.0 < largest < np.inf:
        return np.zeros((groups, BINS))
    shift = int(reduction._shift(largest))
    up = min(shift, 1000)
    return np.array(_dot_bins(a, b, start, groups, math.ldexp(1.0, up),  # writable: an
                              math.ldexp(1.0, shift - up)))  # Allreduce sums it in place


def dot(a, b) -> float:
    """:func:`dhf.reduction.dot` of two device vectors, the same bits."""
    if a.size != b.size:
        raise ValueError(f"dot: vectors of {a.size} and {b.size} values")
    largest = largest_product(a, b)
    return reduction.dot_of_pieces(dot_pieces(a, b, 0, a.size, largest), largest)
