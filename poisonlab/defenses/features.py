"""Label-free feature maps for partition aggregation (SS-DPA, Levine & Feizi 2021).

A feature map is fitted on the *unlabeled* training inputs only, so no label the attacker
flips can change it: every base classifier of the ensemble then learns on the same fixed
representation and one flipped label still changes at most one vote. Each map is an
``nn.Module`` from inputs ``(n, *input_shape)`` to features ``(n, m)``; it is
differentiable, so gradient attacks on the ensemble reach the inputs through it.

- :class:`PCAFeatures` (``features: pca``): projection on the top ``n_components``
  principal directions of the training inputs, then per-feature standardisation.
- :class:`PatchKMeansFeatures` (``features: patch_kmeans``): the single-layer network of
  Coates, Lee & Ng (2011), "An Analysis of Single-Layer Networks in Unsupervised Feature
  Learning": normalised, ZCA-whitened ``patch x patch`` patches, k-means centroids, the
  "triangle" activation ``max(0, mean_j(z_j) - z_k)`` and sum pooling over the image's
  four quadrants (``4 * n_components`` features), then standardisation.
- ``"package.module:factory"``: your own encoder, called as ``factory(x, seed=seed)`` with
  the unlabeled training inputs; it returns an ``nn.Module`` mapping ``(n, *input_shape)``
  to ``(n, m)`` (e.g. a self-supervised network's trunk).

Fitting runs in batches of ``batch_size`` inputs (memory bounded by it) on the device of
``x``; the randomness (k-means' patch sample and start) comes from ``seed`` alone.

>>> x = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0))
>>> f = fit_features("pca", x, n_components=5, seed=0)
>>> tuple(f(x).shape)
(200, 5)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..batching import DEFAULT_BATCH_SIZE, iter_slices
from ..errors import ConfigError
from ..registry import import_target

#: The built-in label-free feature maps (``features:``); anything else is a
#: ``module:factory`` name.
FEATURES: tuple[str, ...] = ("pca", "patch_kmeans")
#: n_components when it is not given, per built-in map.
DEFAULT_COMPONENTS: dict[str, int] = {"pca": 30, "patch_kmeans": 64}
#: Added to the variance before standardising or whitening (Coates et al.'s 0.1 for
#: whitening normalised patches, 1e-6 for the final standardisation).
_WHITEN_EPS = 0.1
_STD_EPS = 1e-6
#: Patches drawn to fit k-means (Coates et al. use 400k on CIFAR; fewer suffice here).
_KMEANS_PATCHES = 100_000
_KMEANS_ITERS = 30


class Standardize(nn.Module):
    """``(z - mean) / std`` with statistics fitted on the training features."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean) / self.std


class PCAFeatures(nn.Module):
    """Projection on the principal directions fitted on the training inputs.

    ``forward(x)``: ``(n, *input_shape) -> (n, n_components)``, standardised.
    """

    def __init__(self, mean: torch.Tensor, components: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("center", mean)               # (D,)
        self.register_buffer("components", components)     # (D, m)
        self.scale = Standardize(torch.zeros(components.shape[1]),
                                 torch.ones(components.shape[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.reshape(x.shape[0], -1) - self.center) @ self.components
        return self.scale(z)


class PatchKMeansFeatures(nn.Module):
    """Coates et al. (2011) single-layer k-means features (see the module docstring).

    ``forward(x)``: ``(n, C, H, W) -> (n, 4 * n_centroids)``, standardised.
    """

    def __init__(self, patch: int, whiten: torch.Tensor, centroids: torch.Tensor) -> None:
        super().__init__()
        self.patch = patch
        self.register_buffer("whiten", whiten)        # (P, P) ZCA matrix
        self.register_buffer("centroids", centroids)  # (m, P)
        m = centroids.shape[0]
        self.scale = Standardize(torch.zeros(4 * m), torch.ones(4 * m))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled triangle activations, before standardisation: (n, 4 m)."""
        n, _, h, w = x.shape
        u = F.unfold(x, self.patch).transpose(1, 2)           # (n, L, P)
        z = _normalise_patches(u) @ self.whiten
        d2 = ((z * z).sum(-1, keepdim=True) - 2 * z @ self.centroids.T
              + (self.centroids * self.centroids).sum(-1))
        dist = d2.clamp_min(1e-12).sqrt()                      # (n, L, m)
        act = torch.relu(dist.mean(-1, keepdim=True) - dist)
        side_h, side_w = h - self.patch + 1, w - self.patch + 1
        act = act.transpose(1, 2).reshape(n, -1, side_h, side_w)
        # Sum over the four quadrants (Coates et al.'s pooling), as a mean times the area
        # so that the statistics do not depend on the image size.
        return F.adaptive_avg_pool2d(act, 2).reshape(n, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(self.raw(x))


def _normalise_patches(u: torch.Tensor) -> torch.Tensor:
    """Each patch minus its mean, over its standard deviation (+ Coates et al.'s 10/255
    brightness floor, scaled to inputs in [0, 1])."""
    mu = u.mean(-1, keepdim=True)
    sd = (u.var(-1, keepdim=True) + 10.0 / 255.0).sqrt()
    return (u - mu) / sd


# --------------------------------------------------------------------------- fitting


def fit_features(name: str, x: torch.Tensor, *, n_components: int | None = None,
                 patch: int = 6, seed: int = 0,
                 batch_size: int | None = DEFAULT_BATCH_SIZE) -> nn.Module:
    """Fit the label-free feature map ``name`` on the unlabeled inputs ``x``.

    Parameters
    ----------
    name : "pca" | "patch_kmeans" | "package.module:factory"
    x : Tensor (n, *input_shape), the training inputs (never their labels)
    n_components : int, optional
        Principal components (pca) or centroids (patch_kmeans); default
        :data:`DEFAULT_COMPONENTS`. A user factory ignores it.
    patch : int
        Patch side of ``patch_kmeans`` (Coates et al.: 6 on 32 x 32 images).
    seed : int
        k-means' patch sample and start; passed to a user factory as ``seed=``.

    Returns
    -------
    nn.Module in eval mode on ``x``'s device, mapping ``(n, *input_shape)`` to ``(n, m)``.
    """
    with torch.no_grad():
        if name == "pca":
            enc: nn.Module = _fit_pca(x, n_components or DEFAULT_COMPONENTS["pca"],
                                      batch_size)
        elif name == "patch_kmeans":
            enc = _fit_patch_kmeans(x, n_components or DEFAULT_COMPONENTS["patch_kmeans"],
                                    patch, seed, batch_size)
        else:
            return _user_features(name, x, seed)
        _fit_scale(enc, x, batch_size)
    return enc.eval()


def _batches(x: torch.Tensor, batch_size: int | None) -> list[torch.Tensor]:
    return [x[s] for s in iter_slices(x.shape[0], batch_size)]


def _fit_pca(x: torch.Tensor, m: int, batch_size: int | None) -> PCAFeatures:
    """Top-``m`` eigenvectors of the inputs' covariance, accumulated in float64 by batch."""
    flat = x.reshape(x.shape[0], -1)
    d = flat.shape[1]
    if m > min(d, flat.shape[0]):
        raise ConfigError(f"n_components={m} is not allowed for features=pca: expected at "
                          f"most min(input size {d}, training samples {flat.shape[0]})")
    mean = flat.double().mean(0)
    cov = torch.zeros(d, d, dtype=torch.float64, device=x.device)
    for b in _batches(flat, batch_size):
        c = b.double() - mean
        cov += c.T @ c
    evals, evecs = torch.linalg.eigh(cov / max(flat.shape[0] - 1, 1))
    comps = evecs[:, evals.argsort(descending=True)[:m]]
    # One sign per component (its largest entry positive): the same map on every machine.
    big = comps.abs().argmax(0)
    comps = comps * comps[big, torch.arange(m, device=x.device)].sign()
    return PCAFeatures(mean.to(x.dtype), comps.to(x.dtype)).to(x.device)


def _fit_patch_kmeans(x: torch.Tensor, m: int, patch: int, seed: int,
                      batch_size: int | None) -> PatchKMeansFeatures:
    """ZCA whitening and k-means centroids of a seeded sample of normalised patches."""
    if x.dim() != 4:
        raise ConfigError(f"features=patch_kmeans needs image inputs (C, H, W): got input "
                          f"shape {tuple(x.shape[1:])} (use features=pca)")
    if patch < 2 or patch > min(x.shape[2], x.shape[3]) - 1:
        raise ConfigError(f"patch={patch} is not allowed for images of "
                          f"{x.shape[2]} x {x.shape[3]}: expected 2 .. "
                          f"{min(x.shape[2], x.shape[3]) - 1}")
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = x.shape
    per_image = (h - patch + 1) * (w - patch + 1)
    take = min(_KMEANS_PATCHES, n * per_image)
    pick = torch.randperm(n * per_image, generator=g)[:take].sort().values
    img, pos = pick // per_image, pick % per_image
    rows = []
    for s in iter_slices(take, batch_size):  # the sampled patches, a few images at a time
        u = F.unfold(x[img[s].to(x.device)], patch).transpose(1, 2)
        rows.append(u[torch.arange(u.shape[0], device=x.device), pos[s].to(x.device)])
    z = _normalise_patches(torch.cat(rows)).double()
    cov = torch.cov(z.T)
    evals, evecs = torch.linalg.eigh(cov)
    whiten = evecs @ torch.diag((evals + _WHITEN_EPS).rsqrt()) @ evecs.T
    zw = z @ whiten
    cent = kmeans(zw, min(m, take), generator=g, iters=_KMEANS_ITERS)
    return PatchKMeansFeatures(patch, whiten.to(x.dtype), cent.to(x.dtype)).to(x.device)


def kmeans(z: torch.Tensor, m: int, *, generator: torch.Generator, iters: int,
           chunk: int = 8192) -> torch.Tensor:
    """Lloyd's k-means on the rows of ``z`` (n, P) from ``m`` seeded distinct rows.

    Returns the centroids (m, P). An emptied cluster restarts at the row farthest from its
    centroid (deterministic). Distances are computed ``chunk`` rows at a time.

    >>> z = torch.cat([torch.zeros(5, 2), torch.ones(5, 2)]).double()
    >>> c = kmeans(z, 2, generator=torch.Generator().manual_seed(0), iters=5)
    >>> sorted(c.sum(1).tolist())
    [0.0, 2.0]
    """
    n = z.shape[0]
    cent = z[torch.randperm(n, generator=generator)[:m].to(z.device)].clone()
    for _ in range(iters):
        assign = torch.empty(n, dtype=torch.int64, device=z.device)
        best = torch.empty(n, dtype=z.dtype, device=z.device)
        for s in iter_slices(n, chunk):
            d = torch.cdist(z[s], cent)
            best[s], assign[s] = d.min(1)
        sums = torch.zeros_like(cent).index_add_(0, assign, z)
        counts = torch.bincount(assign, minlength=m).to(z.dtype)
        empty = counts == 0
        cent = torch.where(empty[:, None], cent, sums / counts.clamp_min(1)[:, None])
        if bool(empty.any()):
            far = best.argsort(descending=True)[: int(empty.sum())]
            cent[empty] = z[far]
    return cent


def _fit_scale(enc: PCAFeatures | PatchKMeansFeatures, x: torch.Tensor,
               batch_size: int | None) -> None:
    """Fit the final standardisation on the training features (batch by batch)."""
    raw = enc.raw if isinstance(enc, PatchKMeansFeatures) else (
        lambda b: (b.reshape(b.shape[0], -1) - enc.center) @ enc.components)
    m = enc.scale.mean.shape[0]
    total = torch.zeros(m, dtype=torch.float64, device=x.device)
    sq = torch.zeros_like(total)
    for b in _batches(x, batch_size):
        f = raw(b).double()
        total += f.sum(0)
        sq += (f * f).sum(0)
    n = x.shape[0]
    mean = total / n
    std = (sq / n - mean * mean).clamp_min(0).add(_STD_EPS).sqrt()
    enc.scale.mean.copy_(mean.to(x.dtype))
    enc.scale.std.copy_(std.to(x.dtype))


def _user_features(name: str, x: torch.Tensor, seed: int) -> nn.Module:
    """``factory(x, seed=seed)`` from ``module:factory``; its output checked to be (n, m)."""
    if ":" not in name:
        raise ConfigError(f"features={name!r} is not allowed: expected one of "
                          f"{', '.join(FEATURES)}, none, or 'package.module:factory'")
    factory = import_target(name, kind="feature map")
    enc = factory(x, seed=seed)
    if not isinstance(enc, nn.Module):
        raise ConfigError(f"features={name!r} returned {type(enc).__name__}: expected an "
                          "nn.Module mapping inputs (n, *input_shape) to features (n, m)")
    enc = enc.to(x.device).eval()
    out = enc(x[:2])
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != min(2, len(x)):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"features={name!r} maps 2 inputs to {shape}: expected a tensor "
                          "of shape (2, m)")
    return enc


def feature_shape(enc: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    """The shape of one feature vector of ``enc`` (one forward pass on one input)."""
    with torch.no_grad():
        return tuple(enc(x[:1]).shape[1:])


__all__ = ["FEATURES", "PCAFeatures", "PatchKMeansFeatures", "feature_shape", "fit_features",
           "kmeans"]
