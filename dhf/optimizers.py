"""The optimiser a config names (``optimizer.name``), built on a worker: HF with the
sampler its batches call for, or the SGD and Adam baselines."""
from __future__ import annotations

from dhf.batches import FIRST_ORDER_NAMES, BatchSizes
from dhf.comm import Communicator
from dhf.coordinator import HFConfig, HFOptimizer
from dhf.data import BatchSampler, FreshSampler, FullBatchSampler
from dhf.optimizer import Optimizer
from dhf.sgd import AdamOptimizer, SGDConfig, SGDOptimizer
from dhf.worker import Worker

#: The first-order baselines by ``optimizer.name``.
FIRST_ORDER = dict(zip(FIRST_ORDER_NAMES, (SGDOptimizer, AdamOptimizer)))


def make_optimizer(config: dict, worker: Worker, comm: Communicator, n_train: int,
                   should_stop=None) -> Optimizer:
    """The optimiser ``optimizer.name`` names, with its batches checked against the data;
    on a GPU, HF's CG keeps its vectors there (``cg_on_device``)."""
    opt_cfg, seed = config["optimizer"], config["run"]["seed"]
    fresh = config["data"]["fresh"]
    batches = BatchSizes.of(opt_cfg)
    batches.check(n_train, fresh)
    if batches.first_order:
        return FIRST_ORDER[opt_cfg["name"]](worker, comm, SGDConfig.from_config(opt_cfg),
                                            n_train, seed, should_stop, fresh=fresh)
    if batches.full:
        sampler = FullBatchSampler(n_train, batches.curvature, seed)
    elif fresh:
        sampler = FreshSampler(*batches.sizes, held_out=batches.held_out)
    else:
        sampler = BatchSampler(n_train, batches.gradient, batches.curvature,
                               batches.backtrack, seed, linesearch=batches.linesearch,
                               held_out=batches.held_out)
    return HFOptimizer(worker, comm, HFConfig.from_config(opt_cfg), sampler, should_stop,
                       cg_on_device=config["run"]["device"] == "gpu" and worker.on_device)
