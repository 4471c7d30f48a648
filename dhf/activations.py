r"""Nonlinearities whose compiled form is fast on every backend.

PyTensor's Numba backend evaluates ``tanh`` one element at a time through the C library's
``tanhf`` (LLVM cannot vectorise it without Intel's SVML, which the pip builds of
llvmlite lack): 17 ns an element, 40 × NumPy's vectorised loop and most of the time of a
float32 RNN forward pass (``docs/benchmarks.md``, "Profile").  In float32, :func:`tanh`
is therefore the rational approximation that Eigen, and with it XLA and TensorFlow, use
for float32 ``tanh`` on CPUs:

.. math:: \tanh x \approx x\,\frac{\alpha_1 + \alpha_3 x^2 + \dots + \alpha_{13} x^{12}}
                               {\beta_0 + \beta_2 x^2 + \beta_4 x^4 + \beta_6 x^6},
          \qquad x \text{ clipped to } [-7.9053, 7.9053],

pure arithmetic that the compiler vectorises (0.3 ns an element).  Its largest error is
3.4e-7 (3 float32 ulps at ±1; ``tests/test_activations.py``), and its derivative is taken as
tanh's own, :math:`1 - y^2`.  In float64 :func:`tanh` is ``pytensor.tensor.tanh``.
"""
from __future__ import annotations

import pytensor.tensor as pt
from pytensor.gradient import disconnected_grad

#: Eigen's ``generic_fast_tanh_float`` (Eigen/src/Core/MathFunctionsImpl.h): odd
#: numerator and even denominator coefficients, lowest order first.
_ALPHA = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05,
          5.12229709037114e-08, -8.60467152213735e-11, 2.00018790482477e-13,
          -2.76076847742355e-16)
_BETA = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04,
         1.19825839466702e-06)
_CLAMP = 7.90531110763549805  # beyond it the approximation is 1 to float32 precision


def tanh(a):
    """``tanh(a)``: exact (``pt.tanh``) in float64, Eigen's rational form in float32."""
    a = pt.as_tensor_variable(a)
    if a.dtype != "float32":
        return pt.tanh(a)
    # the bounds typed as a's: a float64 constant would make JAX compute in float64
    x = pt.clip(a, pt.constant(-_CLAMP, dtype=a.dtype), pt.constant(_CLAMP, dtype=a.dtype))
    x2 = pt.sqr(x)
    y = disconnected_grad(x * _horner(_ALPHA, x2) / _horner(_BETA, x2))
    # Value y (the added term is exactly 0); derivative 1 - y², tanh's own, so the backward
    # pass needs y alone instead of every intermediate of the polynomial.
    return y + (a - disconnected_grad(a)) * (1 - pt.sqr(y))


def _horner(coefficients, z):
    """``c_0 + c_1 z + c_2 z² + …`` with the constants in ``z``'s dtype."""
    total = pt.constant(coefficients[-1], dtype=z.dtype)
    for c in reversed(coefficients[:-1]):
        total = total * z + pt.constant(c, dtype=z.dtype)
    return total
