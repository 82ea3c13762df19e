"""One training loop that every defense plugs into.

Adam over shuffled minibatches for a fixed number of epochs. All randomness (the shuffle
and any label transform of the defense) comes from one private ``torch.Generator`` seeded
by ``seed``, so training is deterministic on the CPU and never touches the global RNG.
Batches are slices of a pre-shuffled tensor (no DataLoader, no per-batch Python overhead
beyond the step itself).

>>> from poisonlab import load_dataset, build_model, get_defense
>>> ds = load_dataset("digits", seed=0)
>>> m = build_model("logistic", ds.input_shape, ds.n_classes, seed=0)
>>> m = train(m, ds.x_train, ds.y_train, defense=get_defense("none"), epochs=2, seed=0)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ._torch import (  # noqa: F401  (the model contract's names stay importable from here)
    PROB_SUM_TOL,
    PROBE_N,
    eval_mode,
    forward,
    looks_like_probabilities,
    match_dtype,
    model_device,
    output_width,
    probe_model,
    probes_quiet,
    validate_logits,
    validate_once,
)
from ._validation import (
    validate_bool,
    validate_bounds,
    validate_inputs,
    validate_labels,
    validate_model,
    validate_scalar,
    validate_seed,
)
from .defenses import Defense, NoDefense
from .errors import (
    ConfigError,
    DataError,
    TrainingError,
)


def _check_finite(losses: list[torch.Tensor], epoch: int, defense: Defense, lr: float,
                  *, first: int = 0) -> None:
    """Raise TrainingError naming the first of this epoch's batches whose loss is NaN/Inf,
    looking at batches ``first`` onwards (those not checked yet)."""
    finite = torch.isfinite(torch.stack(losses[first:]))
    if not bool(finite.all()):
        bad = first + int((~finite).nonzero()[0, 0])
        raise TrainingError(
            f"training loss became {float(losses[bad])} at epoch {epoch + 1}, batch "
            f"{bad + 1} under defense {defense.label}: lower lr (now {lr:g}) or check the "
            "data"
        )


def train(
    model: nn.Module,
    x: Any,
    y: Any,
    *,
    defense: Defense | None = None,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: bool = False,
    x_val: Any = None,
    y_val: Any = None,
    bounds: tuple[float, float] | None = None,
) -> nn.Module:
    """Train ``model`` in place on ``(x, y)`` under ``defense`` and return it in eval mode.

    The defense's hooks run in order (see :mod:`poisonlab.defenses.base`): ``prepare``
    once (data filters), ``epoch_labels`` per epoch, ``transform_labels`` per batch, the
    batch ``objective`` built on its ``loss``, and ``post_hoc`` on the validation split.
    A post-hoc defense (temperature scaling) returns a wrapper around ``model``, and
    partition aggregation (``dpa``) a new ensemble of base classifiers: use the returned
    module.

    Parameters
    ----------
    model : nn.Module returning logits of shape (n, K)
    x : Tensor (n, *input_shape); y : Tensor (n,) of class ids in ``0 .. K - 1``
    defense : Defense, optional
        ``None`` means plain cross-entropy (``get_defense("none")``).
    epochs : int >= 1; batch_size : int >= 1; lr : float > 0; weight_decay : float >= 0
    seed : int >= 0
        Seeds the shuffle and the defense's label randomness.
    progress : bool
        Show a progress bar over epochs.
    x_val, y_val : Tensor (m, *input_shape), Tensor (m,), optional
        The validation split; required by post-hoc defenses, never trained on.
    bounds : (lo, hi), optional
        The input domain, for defenses that perturb inputs (adversarial training); default:
        the range of ``x``.

    Raises
    ------
    DataError
        Malformed inputs, or labels outside the model's output width.
    TrainingError
        The loss became NaN or infinite (on the CPU before that step is applied; on a
        GPU at the end of that epoch).
    """
    defense = NoDefense() if defense is None else defense
    if not isinstance(defense, Defense):
        raise ConfigError(f"defense={defense!r} is not allowed: expected a Defense")
    epochs = validate_scalar("epochs", epochs, lo=1, integer=True)
    batch_size = validate_scalar("batch_size", batch_size, lo=1, integer=True)
    lr = validate_scalar("lr", lr, lo=0, lo_closed=False)
    weight_decay = validate_scalar("weight_decay", weight_decay, lo=0)
    seed = validate_seed("seed", seed)
    validate_bool("progress", progress)
    validate_model(model)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"model {type(model).__name__} has no trainable parameters: "
                          "train needs parameters that require grad")
    x_t, y_t = validate_inputs(x, y)
    x_t = match_dtype(model, x_t)
    k = probe_model(model, x_t, param_grad=True)
    validate_labels(y_t, n_classes=k, of_model=True)
    val = _validation_split(model, defense, x_val, y_val, x_t, k)  # before training
    ensemble = defense.fit_ensemble(model, x_t, y_t, n_classes=k, seed=seed, epochs=epochs,
                                    batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                    progress=progress)
    if ensemble is not None:  # partition aggregation: base models trained on partitions
        return ensemble
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    x_t, y_t = defense.prepare(x_t, y_t, n_classes=k, generator=generator)
    if x_t.shape[0] == 0:
        raise DataError(f"defense {defense.label} left no training data")
    bounds = _train_bounds(x_t, bounds)
    _fit(model, x_t.to(device), y_t.to(device), defense, k, generator, bounds=bounds,
         epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
         progress=progress)
    if val is not None:
        return defense.post_hoc(model, val[0].to(device), val[1].to(device))
    return model


def _validation_split(model: nn.Module, defense: Defense, x_val: Any, y_val: Any,
                      x_t: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The checked validation split a post-hoc defense is fitted on (None if it needs none)."""
    if not defense.needs_validation:
        return None
    if x_val is None or y_val is None:
        raise ConfigError(
            f"x_val=None is not allowed with defense {defense.label}: it is fitted on the "
            "validation split (pass x_val=, y_val=)"
        )
    xv, yv = validate_inputs(x_val, y_val, n_classes=k, name_x="x_val", name_y="y_val")
    if xv.shape[1:] != x_t.shape[1:]:
        raise DataError(f"x_val has input shape {tuple(xv.shape[1:])}: expected "
                        f"{tuple(x_t.shape[1:])} to match x")
    return match_dtype(model, xv), yv


def _train_bounds(x_t: torch.Tensor, bounds: Any) -> tuple[float, float]:
    """``bounds`` checked to hold the training inputs; default their range."""
    if bounds is None:
        return (float(x_t.min()), float(x_t.max()))
    bounds = validate_bounds("bounds", bounds)
    if float(x_t.min()) < bounds[0] or float(x_t.max()) > bounds[1]:
        raise DataError(
            f"x has values in [{float(x_t.min()):g}, {float(x_t.max()):g}]: expected "
            f"values inside bounds [{bounds[0]:g}, {bounds[1]:g}]"
        )
    return bounds


def _fit(model: nn.Module, x_t: torch.Tensor, y_t: torch.Tensor, defense: Defense, k: int,
         generator: torch.Generator, *, bounds: tuple[float, float], epochs: int,
         batch_size: int, lr: float, weight_decay: float, progress: bool) -> None:
    """The training loop: Adam over shuffled minibatches, the defense's hooks per epoch and
    batch; leaves ``model`` in eval mode."""
    device = x_t.device
    # On CUDA, Adam's fused kernel: one launch per step instead of a dozen per parameter
    # tensor. On the CPU the reference implementation, whose numbers the committed
    # baselines hold (the fused CPU kernel rounds differently).
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay,
                           fused=device.type == "cuda" or None)
    n = x_t.shape[0]

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return defense.loss(logits, labels, n_classes=k)

    # On the CPU a non-finite loss is caught before its step is applied. On a GPU, reading
    # the loss back each step would stall the device, so it is checked once per epoch (the
    # call fails either way, naming the first bad batch).
    eager_check = device.type == "cpu"
    model.train()
    try:
        for epoch in tqdm(range(epochs), desc="train", disable=not progress, leave=False):
            y_epoch = defense.epoch_labels(y_t, n_classes=k, generator=generator)
            perm = torch.randperm(n, generator=generator).to(device)
            xs, ys = x_t[perm], y_epoch[perm]
            losses = []
            for start in range(0, n, batch_size):
                xb, yb = xs[start : start + batch_size], ys[start : start + batch_size]
                yb = defense.transform_labels(yb, n_classes=k, generator=generator)
                loss = defense.objective(model, xb, yb, n_classes=k, generator=generator,
                                         loss_fn=loss_fn, bounds=bounds)
                losses.append(loss.detach())
                if eager_check:  # this batch's loss only
                    _check_finite(losses, epoch, defense, lr, first=len(losses) - 1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if not eager_check:
                _check_finite(losses, epoch, defense, lr)
    finally:
        model.eval()
