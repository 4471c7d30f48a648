"""Split a curvature graph into the part fixed during an update and the part that varies.

Within one HF update, every CG iteration evaluates ``Gv`` at the same θ on the same
curvature batch; only the tangent ``v`` changes.  :func:`split_at` finds the *frontier*:
the variables that do not depend on ``v`` but feed nodes that do (the forward states of an
RNN, the layer activations of an MLP).  The worker computes them once per update and
compiles ``Gv`` as a function of them, so a CG iteration costs an R-forward and a backward
pass instead of a full forward pass more.

Cheap nodes on the frontier (shapes, transposes, fills, slices, elementwise maps) are
recomputed from their own inputs rather than cached, so the cache holds only the arrays
that cost work to make.
"""
from __future__ import annotations

from typing import Sequence

from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant, Variable
from pytensor.graph.replace import clone_replace

#: Recomputed each call instead of cached: views, shapes, fills, copies and elementwise
#: maps (memory-bound, and caching them would hold several arrays the size of the states).
_CHEAP_OPS = {"DimShuffle", "SpecifyShape", "Shape", "Shape_i", "Reshape", "Subtensor",
              "IncSubtensor", "Alloc", "AllocEmpty", "MakeVector", "ScalarFromTensor",
              "TensorFromScalar", "Elemwise"}


def split_at(outputs: Sequence[Variable], varying: Sequence[Variable]
             ) -> tuple[list[Variable], list[Variable], list[Variable]]:
    """Return ``(frontier, placeholders, outputs_of_placeholders)``.

    ``frontier`` are the variables to compute once; ``placeholders`` fresh variables of
    the same types; ``outputs_of_placeholders`` the ``outputs`` rewritten to read the
    placeholders instead of recomputing the frontier.
    """
    varying = set(varying)
    depends: dict[Variable, bool] = {}

    def varies(var: Variable) -> bool:
        # Iterative post-order walk: graphs of long scans are deep.
        stack = [var]
        while stack:
            v = stack[-1]
            if v in depends:
                stack.pop()
                continue
            if v in varying or v.owner is None:
                depends[v] = v in varying
                stack.pop()
                continue
            pending = [i for i in v.owner.inputs if i not in depends]
            if pending:
                stack.extend(pending)
            else:
                depends[v] = any(depends[i] for i in v.owner.inputs)
                stack.pop()
        return depends[var]

    frontier: list[Variable] = []
    seen: set = set()
    stack = list(outputs)
    while stack:
        var = stack.pop()
        if var in seen:
            continue
        seen.add(var)
        if var.owner is None or isinstance(var, (SharedVariable, Constant)):
            continue
        if varies(var) or _is_cheap(var):
            stack.extend(var.owner.inputs)
        else:
            frontier.append(var)
    placeholders = [v.type() for v in frontier]
    for v, p in zip(frontier, placeholders):
        p.name = f"cached_{v.name or type(v.owner.op).__name__}"
    rewritten = clone_replace(list(outputs), dict(zip(frontier, placeholders)))
    return frontier, placeholders, rewritten


def _is_cheap(var: Variable) -> bool:
    return type(var.owner.op).__name__ in _CHEAP_OPS
