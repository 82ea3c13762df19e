"""The geometry of an evasion threat: per-sample random streams, the norm table
(norms, projections onto the eps-ball, random starts) that every attack shares.

Randomness is drawn per sample from :class:`SampleRNG` (a stream per sample and purpose),
so a sample's random start does not depend on which batch it is in (docs/batching.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..threat import EvasionThreat, Norm

# --------------------------------------------------------------------------- randomness

_MASK64 = (1 << 64) - 1


def _mix64(z: int) -> int:
    """splitmix64's finaliser (Steele et al. 2014): a bijective scramble of 64 bits."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


@dataclass(frozen=True, eq=False)
class SampleRNG:
    """Random streams keyed by sample, so that an attack's draws never depend on batching.

    Row ``j`` of every draw depends only on ``(seed, index[j], stream)``: sample ``i`` gets
    the same random start in restart ``r`` whether it is attacked alone, in a batch of 7
    or with the whole set, and whichever other samples are still being attacked. Draws
    are made on the CPU (then moved), so they are the same on every device.

    Parameters
    ----------
    seed : int
        The attack's seed (or a child seed of it, one per eps of a security curve).
    index : int64 Tensor (n,)
        Global ids of the batch's samples within the input set.

    >>> rng = SampleRNG(0, torch.arange(5))
    >>> bool((rng.take(torch.tensor([3])).rand((2,), stream=1)
    ...       == rng.rand((2,), stream=1)[3]).all())
    True
    """

    seed: int
    index: torch.Tensor

    @staticmethod
    def of(seed: int, n: int) -> SampleRNG:
        return SampleRNG(seed, torch.arange(n))

    def __len__(self) -> int:
        return int(self.index.numel())

    def take(self, ix: torch.Tensor | slice) -> SampleRNG:
        """The streams of rows ``ix`` (a slice, a bool mask or ids into this batch)."""
        if isinstance(ix, torch.Tensor):
            ix = ix.cpu()
        return SampleRNG(self.seed, self.index[ix].reshape(-1))

    def _key(self, stream: int) -> int:
        return _mix64(_mix64(self.seed & _MASK64) ^ (stream & _MASK64))

    def generators(self, *, stream: int) -> list[torch.Generator]:
        """One CPU generator per sample for draw ``stream``."""
        key = self._key(stream)
        return [torch.Generator().manual_seed(_mix64(key ^ i) >> 1)
                for i in self.index.tolist()]

    def rand(self, shape: tuple[int, ...] | torch.Size, *, stream: int) -> torch.Tensor:
        """Uniform [0, 1) draws of shape (len(self), *shape), float32, CPU."""
        rows = [torch.rand(shape, generator=g) for g in self.generators(stream=stream)]
        return torch.stack(rows) if rows else torch.zeros((0, *shape))

    def randn(self, shape: tuple[int, ...] | torch.Size, *, stream: int) -> torch.Tensor:
        """Standard normal draws of shape (len(self), *shape), float32, CPU."""
        rows = [torch.randn(shape, generator=g) for g in self.generators(stream=stream)]
        return torch.stack(rows) if rows else torch.zeros((0, *shape))

    def batch_seed(self, *, stream: int) -> int:
        """One 31-bit seed for the whole batch, for code that cannot draw per sample (a
        third-party attack): it depends on the batch's first sample, so such an attack's
        numbers depend on the batch size."""
        first = int(self.index[0]) if len(self) else 0
        return _mix64(self._key(stream) ^ first) >> 33


# --------------------------------------------------------------------------- norm table


def _flat_norm(v: torch.Tensor, p: float) -> torch.Tensor:
    """Per-sample norm of ``v`` (n, ...) as a tensor of shape (n,)."""
    return torch.linalg.vector_norm(v.flatten(1), ord=p, dim=1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def _linf_random(shape: torch.Size, eps: float, rng: SampleRNG, stream: int) -> torch.Tensor:
    return (rng.rand(shape, stream=stream) * 2 - 1) * eps


def _l2_random(shape: torch.Size, eps: float, rng: SampleRNG, stream: int) -> torch.Tensor:
    # Uniform in the l2 ball: a Gaussian direction, radius eps * u^(1/d), per sample.
    d = math.prod(shape)
    rows = []
    for g in rng.generators(stream=stream):
        direction = torch.randn(shape, generator=g)
        radius = eps * float(torch.rand((), generator=g)) ** (1.0 / d)
        rows.append(direction * (radius / max(float(direction.norm()), 1e-12)))
    return torch.stack(rows) if rows else torch.zeros((0, *shape))


def _l2_project(delta: torch.Tensor, eps: float) -> torch.Tensor:
    norms = _flat_norm(delta, 2)
    factor = torch.where(norms > eps, eps / norms.clamp_min(1e-12), torch.ones_like(norms))
    return delta * _bcast(factor, delta)


def _l2_normalize(g: torch.Tensor) -> torch.Tensor:
    return g / _bcast(_flat_norm(g, 2).clamp_min(1e-12), g)


@dataclass(frozen=True)
class NormOps:
    """What an attack needs from a norm: projection, steepest-ascent step, random start."""

    p: float
    project: Callable[[torch.Tensor, float], torch.Tensor]
    normalize: Callable[[torch.Tensor], torch.Tensor]
    #: (sample_shape, eps, rng, stream) -> a random point of the ball per sample of rng.
    random_init: Callable[[torch.Size, float, SampleRNG, int], torch.Tensor]

    def norm(self, v: torch.Tensor) -> torch.Tensor:
        return _flat_norm(v, self.p)


NORMS: dict[Norm, NormOps] = {
    Norm.LINF: NormOps(math.inf, lambda d, e: d.clamp(-e, e), torch.sign, _linf_random),
    Norm.L2: NormOps(2.0, _l2_project, _l2_normalize, _l2_random),
}


def project(
    x: torch.Tensor, x_adv: torch.Tensor, threat: EvasionThreat, *, clip: bool = True
) -> torch.Tensor:
    """Project ``x_adv`` into the eps-ball around ``x`` and, if ``clip``, into the bounds.

    Clipping into the bounds only moves coordinates towards ``x`` (which lies inside the
    bounds), so the result stays inside the ball.
    """
    delta = NORMS[threat.norm].project(x_adv - x, threat.eps)
    out = x + delta
    return out.clamp(*threat.bounds) if clip else out
