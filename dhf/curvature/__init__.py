r"""Curvature of the objective, as symbolic PyTensor graphs (nothing is compiled here).

Notation, used throughout dhf:

- ``theta`` (θ): all parameters as one flat float64 vector; ``params`` the shared
  variables it is cut into.
- ``s``: the model's output, where the matching loss :math:`L(s, y)` is applied.
- :math:`J = \partial s / \partial \theta`: the Jacobian of ``s``.
- :math:`H_L = \partial^2 L / \partial s^2`: the (full, not diagonal) loss Hessian in ``s``.
- :math:`G = J^\top H_L J`: the Gauss-Newton matrix (positive semi-definite for a convex
  :math:`L`); ``Gv`` its product with a tangent ``v``.
- λ (``damping``): Tikhonov damping, :math:`G + \lambda I`; μ (``structural_damping``)
  weighs the Gauss-Newton matrix of a matching loss on the hidden pre-activations ``a``,
  :math:`\lambda\mu\, J_a^\top D_a J_a` (Martens & Sutskever 2011).
- ``tangents`` / ``cotangents``: PyTensor's words for the vectors pushed forward through
  :math:`J` (``pushforward``) and pulled back through :math:`J^\top` (``pullback``).
"""
from dhf.curvature.gauss_newton import gauss_newton_product, model_gauss_newton_product

__all__ = ["gauss_newton_product", "model_gauss_newton_product"]
