"""Train many small models at once, each on its own subset of the data (the base
classifiers of partition aggregation).

Every model ``i`` is trained the way :func:`poisonlab.train` trains one model alone on its
subset: ``epochs`` passes of Adam (torch's update, written out per model) over minibatches
of ``batch_size`` drawn from its own ``torch.Generator`` (seeded by ``seeds[i]``), mean
cross-entropy per batch. What it learns
depends on its subset, its seed and these settings only, never on the other subsets (the
property the DPA certificate rests on): the update of a model whose subset has fewer
batches than another's is masked out once its own epochs are done, and Adam is applied
per model (its step count, moments and bias correction are per model).

Models without buffers (logistic regression, MLPs, CNNs without batch norm) are trained in
one vectorised step for all of them (``torch.func.vmap`` over stacked parameters: one
batched matmul instead of ``k``); a model with buffers (batch norm) is trained one after
the other with the same schedule.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..errors import TrainingError

_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


class _Schedule:
    """Each subset's minibatches: a fresh permutation of its indices every epoch."""

    def __init__(self, groups: Sequence[torch.Tensor], seeds: Sequence[int], epochs: int,
                 batch_size: int) -> None:
        self.groups = [g.cpu() for g in groups]
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.b = batch_size
        self.steps = [math.ceil(len(g) / batch_size) for g in self.groups]
        self.total = [epochs * s for s in self.steps]
        self.perms: list[torch.Tensor] = [g for g in self.groups]

    @property
    def n_steps(self) -> int:
        return max(self.total)

    def batch(self, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step ``t``: indices (k, b) into the data, their mask (k, b), active models (k,)."""
        k = len(self.groups)
        idx = torch.zeros(k, self.b, dtype=torch.int64)
        mask = torch.zeros(k, self.b, dtype=torch.bool)
        active = torch.zeros(k, dtype=torch.bool)
        for i, g in enumerate(self.groups):
            if t >= self.total[i]:
                continue
            j = t % self.steps[i]
            if j == 0:  # a new epoch of this subset
                self.perms[i] = g[torch.randperm(len(g), generator=self.gens[i])]
            part = self.perms[i][j * self.b:(j + 1) * self.b]
            idx[i, :len(part)] = part
            mask[i, :len(part)] = True
            active[i] = True
        return idx, mask, active


def _adam_step(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
               state: list[list[torch.Tensor]], t: torch.Tensor, active: torch.Tensor, *,
               lr: float, weight_decay: float) -> None:
    """One Adam step (torch's formula, L2 weight decay on the gradient) of the active
    models; the leading dimension of every tensor is the model."""
    b1, b2 = _BETAS
    tf = t.clamp_min(1).to(params[0].dtype)
    for p, g, (m, v) in zip(params, grads, state, strict=True):
        shape = (-1,) + (1,) * (p.dim() - 1)
        a = active.view(shape)
        if weight_decay:
            g = g + weight_decay * p
        m.copy_(torch.where(a, b1 * m + (1 - b1) * g, m))
        v.copy_(torch.where(a, b2 * v + (1 - b2) * g * g, v))
        bias1 = (1 - b1 ** tf).view(shape)
        bias2 = (1 - b2 ** tf).view(shape)
        step = lr / bias1 * m / (v.sqrt() / bias2.sqrt() + _ADAM_EPS)
        p.sub_(torch.where(a, step, torch.zeros_like(step)))


def _masked_ce(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per model (leading dim) mean cross-entropy over the masked-in samples: (k,)."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                         reduction="none").reshape(mask.shape)
    m = mask.to(ce.dtype)
    return (ce * m).sum(1) / m.sum(1).clamp_min(1)


def _check(loss: torch.Tensor, active: torch.Tensor, t: int, first: int) -> None:
    bad = active & ~torch.isfinite(loss)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise TrainingError(f"the loss of base model {first + i} became {float(loss[i])} at "
                            f"step {t + 1}: lower lr or check the data")


def vectorisable(model: nn.Module) -> bool:
    """True if ``model`` has no buffers (``vmap`` over stacked parameters trains it)."""
    return next(model.buffers(), None) is None


#: Base models trained together in one vectorised step (and shipped as one task by a
#: partition map): bounds the memory of a step to CHUNK models' batches whatever ``k``.
#: Chunks are the same under every executor, so the numbers are too.
CHUNK = 16

#: What a chunk job is: the models, their index groups and their seeds.
Job = tuple[list[nn.Module], list[torch.Tensor], list[int]]
#: ``mapper(train_chunk, x, y, jobs, settings)`` -> each job's trained state dicts.
Mapper = Callable[..., list[list[dict[str, torch.Tensor]]]]

#: Where the chunks run: None in this process, one after the other; the Ray executor sets
#: a mapper that runs them as Ray tasks (:func:`partitions_over`).
PARTITION_MAP: ContextVar[Mapper | None] = ContextVar("poisonlab_partition_map",
                                                       default=None)


@contextmanager
def partitions_over(mapper: Mapper) -> Iterator[None]:
    """Inside the block, :func:`fit_stacked` runs its chunks through ``mapper``."""
    token = PARTITION_MAP.set(mapper)
    try:
        yield
    finally:
        PARTITION_MAP.reset(token)


def map_here(fn: Callable[..., list[dict[str, torch.Tensor]]], x: torch.Tensor,
             y: torch.Tensor, jobs: Sequence[Job], settings: dict[str, Any]
             ) -> list[list[dict[str, torch.Tensor]]]:
    """The default mapper: every chunk in this process, in order."""
    return [fn(x, y, *job, settings) for job in jobs]


def fit_stacked(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor,
                groups: Sequence[torch.Tensor], seeds: Sequence[int], *, epochs: int,
                batch_size: int, lr: float, weight_decay: float,
                progress: bool = False) -> None:
    """Train ``models[i]`` in place on ``(x[groups[i]], y[groups[i]])`` (see the module
    docstring); leaves them in eval mode. ``x``, ``y`` and the models on one device.

    The models are trained :data:`CHUNK` at a time, each chunk by :func:`train_chunk`,
    in this process or as tasks of the mapper :func:`partitions_over` installs.
    """
    jobs: list[Job] = [(list(models[i:i + CHUNK]), list(groups[i:i + CHUNK]),
                        list(seeds[i:i + CHUNK])) for i in range(0, len(models), CHUNK)]
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr,
                "weight_decay": weight_decay, "progress": progress,
                "threads": torch.get_num_threads()}
    mapper = PARTITION_MAP.get() or map_here
    states = mapper(train_chunk, x, y, jobs, settings)
    for job, trained in zip(jobs, states, strict=True):
        for m, state in zip(job[0], trained, strict=True):
            m.load_state_dict(state)
            m.eval()


def train_chunk(x: torch.Tensor, y: torch.Tensor, models: list[nn.Module],
                groups: list[torch.Tensor], seeds: list[int],
                settings: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
    """Train one chunk of models (in place) and return their state dicts."""
    sched_args = (settings["epochs"], settings["batch_size"])
    opt = {"lr": settings["lr"], "weight_decay": settings["weight_decay"],
           "progress": settings["progress"]}
    if all(vectorisable(m) for m in models):
        _fit_vmap(models, x, y, _Schedule(groups, seeds, *sched_args), **opt)
    else:
        for i, m in enumerate(models):
            _fit_one(m, x, y, _Schedule([groups[i]], [seeds[i]], *sched_args), i, **opt)
    return [m.state_dict() for m in models]


def _fit_vmap(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor,
              sched: _Schedule, *, lr: float, weight_decay: float, progress: bool) -> None:
    params, _buffers = torch.func.stack_module_state(list(models))
    template = copy.deepcopy(models[0]).to("meta")
    names = list(params)

    def one(p: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(template, (p, {}), (xb,))

    batched = torch.func.vmap(one)
    leaves = [params[n] for n in names]
    state = [[torch.zeros_like(p), torch.zeros_like(p)] for p in leaves]
    t = torch.zeros(len(models), dtype=torch.int64, device=x.device)
    for step in tqdm(range(sched.n_steps), desc="train partitions", disable=not progress,
                     leave=False):
        idx, mask, active = (a.to(x.device) for a in sched.batch(step))
        loss = _masked_ce(batched(dict(zip(names, leaves, strict=True)), x[idx]), y[idx],
                          mask)
        _check(loss.detach(), active, step, 0)
        grads = torch.autograd.grad(loss.sum(), leaves)
        t += active.to(torch.int64)
        with torch.no_grad():
            _adam_step(leaves, grads, state, t, active, lr=lr, weight_decay=weight_decay)
    with torch.no_grad():
        for i, m in enumerate(models):
            for n in names:
                m.get_parameter(n).copy_(params[n][i])


def _fit_one(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sched: _Schedule,
             index: int, *, lr: float, weight_decay: float, progress: bool) -> None:
    """One model with buffers (batch norm), on its own schedule; the same Adam."""
    leaves = [p for p in model.parameters() if p.requires_grad]
    state = [[torch.zeros_like(p)[None], torch.zeros_like(p)[None]] for p in leaves]
    t = torch.zeros(1, dtype=torch.int64, device=x.device)
    model.train()
    for step in tqdm(range(sched.n_steps), desc=f"train partition {index}",
                     disable=not progress, leave=False):
        idx, mask, active = (a.to(x.device) for a in sched.batch(step))
        rows = idx[0][mask[0]]
        loss = F.cross_entropy(model(x[rows]), y[rows])
        _check(loss.detach()[None], active, step, index)
        grads = torch.autograd.grad(loss, leaves)
        t += 1
        with torch.no_grad():
            _adam_step([p[None] for p in leaves], [g[None] for g in grads], state, t,
                       active, lr=lr, weight_decay=weight_decay)
