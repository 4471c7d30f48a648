"""An update's batches and their rules, in one place: how many training rows they take,
whether they fit the data, how the API shrinks defaults to a small data set, and which
batch sizes the compiled functions will see.

HF's four batches (Martens 2010; Martens & Sutskever 2012, §20.12): the gradient batch
(0: every training row), the curvature batch, a subset of it, and the backtracking and
line-search batches, held out beside the gradient batch (``held_out``, Martens 2010) or
disjoint subsets of it (Sutskever's release).  SGD and Adam draw one batch,
``sgd_batch``.  The samplers (:mod:`dhf.data`), ``dhf-train``, its dry run and
:func:`dhf.train` all ask :class:`BatchSizes`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from dhf.errors import ConfigError

#: Optimisers that draw one batch (``optimizer.sgd_batch``) and no curvature.
FIRST_ORDER_NAMES = ("sgd", "adam")


@dataclass(frozen=True)
class BatchSizes:
    """Rows per batch of one update (the ``optimizer.*_batch`` keys)."""

    gradient: int
    curvature: int = 0
    backtrack: int = 0
    linesearch: int = 0
    held_out: bool = True
    first_order: bool = False

    @classmethod
    def of(cls, opt_cfg: dict) -> "BatchSizes":
        """The batches the ``[optimizer]`` section names."""
        if opt_cfg["name"] in FIRST_ORDER_NAMES:
            return cls(opt_cfg["sgd_batch"], first_order=True)
        return cls.hf(opt_cfg)

    @classmethod
    def hf(cls, opt_cfg: dict) -> "BatchSizes":
        """HF's batches in the ``[optimizer]`` section, whichever optimiser it names."""
        return cls(opt_cfg["gradient_batch"], opt_cfg["curvature_batch"],
                   opt_cfg["backtrack_batch"], opt_cfg["linesearch_batch"],
                   opt_cfg["held_out"])

    @property
    def sizes(self) -> list[int]:
        """HF's ``[gradient, curvature, backtrack, linesearch]``; a first-order
        optimiser's ``[sgd_batch]``."""
        if self.first_order:
            return [self.gradient]
        return [self.gradient, self.curvature, self.backtrack, self.linesearch]

    @property
    def full(self) -> bool:
        """Is the gradient taken on every training row (``gradient_batch = 0``)?"""
        return not self.first_order and self.gradient == 0

    @property
    def searched(self) -> int:
        """Rows of the backtracking and line-search batches together."""
        return self.backtrack + self.linesearch

    @property
    def rows_needed(self) -> int:
        """Distinct training rows an update draws: the gradient batch, and the searched
        batches beside it when they are held out."""
        return self.gradient + (self.searched if self.held_out else 0)

    @property
    def inside_gradient(self) -> int:
        """Rows drawn from inside the gradient batch: the curvature batch, and the
        searched batches when they are not held out."""
        return self.curvature + (0 if self.held_out else self.searched)

    def check_consistent(self, fresh: bool) -> None:
        """Refuse, in one line, batches that contradict each other or ``data.fresh``,
        before any data is seen (:func:`dhf.config.validate`)."""
        if self.first_order:
            return
        if self.full and fresh:
            raise ConfigError("optimizer.gradient_batch = 0 trains on every row of a fixed "
                              "training set; data.fresh = true has none (set a batch size)")
        if not self.full and self.curvature > self.gradient:
            raise ConfigError(f"optimizer.curvature_batch = {self.curvature} must be "
                              f"<= optimizer.gradient_batch = {self.gradient} (it is a "
                              "subset)")

    def check(self, n_train: int | None, fresh: bool) -> None:
        """Refuse, in one line, batches that do not fit each other or ``n_train``
        training rows (any number when ``fresh``: rows are generated when drawn)."""
        if self.first_order:
            if not fresh and self.gradient > n_train:
                raise ConfigError(f"optimizer.sgd_batch = {self.gradient} exceeds the "
                                  f"{n_train} training rows")
            return
        if self.full:  # every row (Martens 2010): only the curvature chunk must fit
            if n_train is not None and self.curvature > n_train:
                raise ConfigError(f"optimizer.curvature_batch = {self.curvature} "
                                  f"exceeds the {n_train} training rows")
            return
        if not self.held_out and self.inside_gradient > self.gradient:
            raise ConfigError(
                f"optimizer.curvature_batch + backtrack_batch + linesearch_batch = "
                f"{self.inside_gradient} exceeds optimizer.gradient_batch = "
                f"{self.gradient}; with optimizer.held_out = false they are disjoint rows "
                "of the gradient batch")
        if not fresh and self.rows_needed > n_train:
            keys = ("optimizer.gradient_batch + backtrack_batch + linesearch_batch"
                    if self.held_out else "optimizer.gradient_batch")
            raise ConfigError(
                f"{keys} = {self.rows_needed} exceeds the {n_train} training rows; lower "
                "them (linesearch_batch = 0 searches on the backtracking batch) or set "
                "data.fresh = true")

    def fitted(self, n_rows: int, given) -> "BatchSizes":
        """The HF batches shrunk to ``n_rows`` training rows where the caller left them
        at their defaults (``given``: the keys the caller set, which stay): the
        curvature batch at most the gradient batch (or every row), and where the rows
        are too few for the defaults, backtracking on a fifth of them and the gradient
        on the rest."""
        fit = self
        if self.full:
            if "curvature_batch" not in given:
                fit = replace(fit, curvature=min(fit.curvature, n_rows))
            return fit
        if "curvature_batch" not in given:  # a subset of the gradient batch, however set
            fit = replace(fit, curvature=min(fit.curvature, fit.gradient))
        if fit.rows_needed <= n_rows:
            return fit
        if "backtrack_batch" not in given:
            fit = replace(fit, backtrack=max(1, min(fit.backtrack, n_rows // 5)))
        if "gradient_batch" not in given:
            rest = n_rows - (fit.searched if fit.held_out else 0)
            fit = replace(fit, gradient=max(1, min(fit.gradient, rest)))
        if "curvature_batch" not in given:
            fit = replace(fit, curvature=min(fit.curvature, fit.gradient))
        return fit

    def compiled_rows(self, n_train: int, n_valid: int, train_error: bool) -> dict:
        """The sizes of the batches each compiled function will be given in a run:
        ``{"loss": [...], "grad": [...], "curvature": [...]}``
        (:meth:`dhf.worker.Worker.warm_up`)."""
        loss = [n_valid] + ([n_train] if train_error else [])
        if self.first_order:
            return {"loss": loss, "grad": [self.gradient], "curvature": []}
        searched = [n_train] if self.full else [self.backtrack, self.linesearch]
        return {"loss": [b for b in loss + searched if b],
                "grad": [n_train if self.full else self.gradient],
                "curvature": [self.curvature]}
