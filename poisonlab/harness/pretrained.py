"""Evaluate your own trained model on your own data, without training (``poisonlab evaluate``).

The model is ``"package.module:factory"`` (or a registered architecture) with a
``state_dict`` file loaded by ``torch.load(weights_only=True)``; the data is an ``.npz``
file, a folder of memory-mapped ``.npy`` arrays, an image folder (see
:mod:`poisonlab.data_sources`), a ``"package.module:function"`` or a registered dataset
(see :mod:`poisonlab.data`).
The measurements are :func:`~poisonlab.harness.evaluate.evaluate_model`'s: clean accuracy,
calibration (with the reliability diagram's data), evasion (robust accuracy and attack
success per eps and attack, with the per-sample worst case), off-manifold confidence and
the information metrics (mutual information, logit and weight norms).

The output folder gets a schema-valid ``results.json`` holding one cell whose defense is
``pretrained`` (the model as given; nothing trained, no poisoning) and the usual
``report.md`` / ``report.html``. A folder holding a suite run is refused; an earlier
``evaluate`` result in the folder is replaced.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write
from .._validation import check_device, check_distinct
from ..attacks import get_attack
from ..attacks.evasion import child_seeds
from ..batching import DEFAULT_BATCH_SIZE, check_batch_size
from ..data import Dataset, load_dataset, load_npz
from ..errors import ConfigError
from ..models import build_model
from ..threat import EvasionThreat, Norm
from .evaluate import _SEED_SLOTS, PRETRAINED_METRICS, _as_spec, evaluate_model_details
from .report import PRETRAINED
from .runner import build_results, prepare_out
from .schema import RESULTS_NAME
from .spec import SUITE_VERSION, EvasionSpec, InformationSpec
from .suite import check_n_noise, check_suite_seed, split_batch_size


def load_data(data: str | Path, *, seed: int = 0) -> tuple[Dataset, dict[str, Any]]:
    """Load ``data`` and its ``{"name", "params"}`` spec for results.json.

    ``data`` is tried in this order: an ``.npz`` path or any existing file; a folder (or
    file-name prefix) holding ``x_test.npy`` (memory-mapped arrays, ``npy``); any other
    folder (an image folder: ``train/`` and ``test/`` sub-folders, or itself one
    ``ImageFolder`` that is the test set); else a dataset name or
    ``"package.module:function"``. Without training images or arrays the training and
    validation splits are empty: the Gaussian noise (training mean/std), the mutual
    information (training examples) and the temperature (validation split) are NaN.
    """
    if not isinstance(data, str | Path):
        raise ConfigError(f"data={data!r} is not allowed: expected an .npz path, a folder, "
                          "'package.module:function' or a dataset name")
    if str(data).endswith(".npz") or Path(data).is_file():
        return load_npz(data, seed=seed), {"name": "npz", "params": {"path": str(data)}}
    from ..data_folders import load_arrays, load_image_folder

    p = Path(data)
    if (p / "x_test.npy").is_file() or (not p.is_dir() and Path(f"{data}x_test.npy").is_file()):
        ds = load_arrays(data, seed=seed, test_only=True)
        return ds, {"name": "npy", "params": {"path": str(data)}}
    if p.is_dir():
        ds = load_image_folder(data, seed=seed, test_only=True)
        return ds, {"name": "image_folder", "params": {"root": str(data)}}
    return load_dataset(str(data), seed=seed), {"name": str(data), "params": {}}


def evaluate_pretrained(
    model: str,
    weights: str | Path,
    data: str,
    out: str | Path,
    *,
    eps: Sequence[float] = (),
    norm: Norm | str = Norm.LINF,
    attacks: Sequence[str | Mapping[str, Any]] = ("pgd",),
    seed: int = 0,
    n_noise: int = 1000,
    report: bool = True,
    device: str | torch.device = "cpu",
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    model_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a trained model on a dataset's test split and write results to ``out``.

    Parameters
    ----------
    model : str
        ``"package.module:factory"`` or a registered architecture name.
    weights : path
        Its ``state_dict`` (``torch.save(model.state_dict(), path)``).
    data : str
        An ``.npz`` path, a folder of ``.npy`` arrays or images (see :func:`load_data`),
        ``"package.module:function"`` or a registered dataset name.
    out : path
        Output folder (created); gets results.json, report.md, report.html.
    eps : sequence of float >= 0
        Evasion budgets; empty: no evasion metrics.
    norm : "linf" | "l2"
    attacks : sequence of attack names or ``{name: ..., **params}`` mappings
    seed : int >= 0
        Seeds the validation split, the attacks and the noise, as in a suite cell.
    n_noise : int >= 10
    report : bool
        Also write report.md and report.html.
    device : "cpu", "cuda", "cuda:N", "auto" or torch.device
        Where the model is evaluated: it is built (and its weights loaded) on the CPU, then
        moved there; the data stays on the CPU and is moved batch by batch, and the random
        draws (noise, attack starts) are made on CPU generators, so they do not depend on
        it. Recorded in the cell as ``device``.
    batch_size : int >= 1 or None
        Test inputs per forward pass of every attack, metric and sanity check (None: all
        at once); an attack's ``{name: ..., batch_size: n}`` overrides it for that attack.
        It bounds the memory and changes no number (docs/batching.md); recorded in the
        cell as ``batch_size``, outside its key.
    model_params : mapping, optional
        Keyword arguments of the architecture, e.g. ``{"mean": [0.4914, 0.4822, 0.4465],
        "std": [0.2471, 0.2435, 0.2616]}`` for a built-in residual network trained on
        normalised inputs (``poisonlab evaluate --model-param mean=[...]``).

    Returns
    -------
    dict, the results document (the content of results.json).

    Raises
    ------
    ConfigError, DataError, UnknownNameError
        Bad input, before anything is written.
    """
    t0 = time.perf_counter()
    dev = check_device("device", device)
    batch_size = check_batch_size("batch_size", batch_size)
    seed = check_suite_seed("seed", seed)  # the same bounds as a suite's
    n_noise = check_n_noise("n_noise", n_noise)
    if isinstance(eps, str | bytes) or not isinstance(eps, Sequence):
        raise ConfigError(f"eps={eps!r} is not allowed: expected a list of budgets")
    if isinstance(attacks, str | bytes) or not isinstance(attacks, Sequence):
        raise ConfigError(f"attacks={attacks!r} is not allowed: expected a list of attacks")
    check_distinct("eps", list(eps), what="budgets")
    ds, ds_spec = load_data(data, seed=seed)
    if model_params is None:
        model_params = {}
    if not isinstance(model_params, Mapping):
        raise ConfigError(f"model_params={model_params!r} is not allowed: expected a mapping "
                          "of the architecture's parameters")
    net = build_model(model, ds.input_shape, ds.n_classes, seed=seed, weights=weights,
                      **model_params).to(dev)
    threats = [EvasionThreat(norm=norm, eps=e, bounds=ds.bounds) for e in eps]
    given = [_as_spec(a) for a in attacks]
    split = [split_batch_size(a) for a in given]  # batch_size: a call argument, no setting
    a_specs = [a for a, _ in split]
    check_distinct("attacks", [a.label for a in a_specs], what="attacks")
    knowledge = {a.label: get_attack(a.name, **a.kwargs).knowledge.value for a in a_specs}
    info = InformationSpec()
    details = evaluate_model_details(net, ds, threats=threats,
                                     attacks=given if threats else (), seed=seed,
                                     n_noise=n_noise, information=info,
                                     batch_size=batch_size)
    out_dir = prepare_out(out, resume=False)
    evasion = ([EvasionSpec(norm=threats[0].norm, eps=tuple(t.eps for t in threats),  # type: ignore[arg-type]
                            bounds=ds.bounds).to_dict()] if threats else [])
    config: dict[str, Any] = {
        "name": "evaluate", "version": SUITE_VERSION,
        "description": f"pretrained model {model} (weights {weights}) evaluated on {data}",
        "datasets": [ds_spec], "models": [{"name": model,
                    "params": {**model_params, "weights": str(weights)}}],
        "defenses": [{"name": PRETRAINED, "params": {}}], "poisoning": [], "seeds": [seed],
        "training": None, "evasion": evasion,
        "attacks": [a.to_dict() for a in a_specs] if threats else [],
        "metrics": list(PRETRAINED_METRICS), "n_noise": n_noise,
        "information": info.to_dict(),
        "attack_knowledge": knowledge if threats else {},
    }
    own = {a.label: b for a, b in split if b is not None} if threats else {}
    cell: dict[str, Any] = {
        "dataset": ds_spec, "model": config["models"][0], "defense": config["defenses"][0],
        "poisoning": None, "seed": seed,
    }
    blob = json.dumps({"cell": cell, "eval": config}, sort_keys=True, separators=(",", ":"))
    record = {
        "key": hashlib.sha256(blob.encode()).hexdigest()[:24], **cell,
        "seeds": dict(zip(_SEED_SLOTS, child_seeds(seed, len(_SEED_SLOTS)), strict=True)),
        "status": "ok", "error": None, "dataset_summary": ds.summary(),
        "poisoning_info": None, "metrics": details["metrics"],
        "reliability": details["reliability"], "checks": details["checks"],
        "timing": {"wall_s": round(time.perf_counter() - t0, 3)}, "device": str(dev),
        # Outside the key: how much ran at once changes no number.
        "batch_size": batch_size, **({"attack_batch_sizes": own} if own else {}),
    }
    doc = build_results(config, None, [record])
    atomic_write(out_dir / RESULTS_NAME, json.dumps(doc, indent=1) + "\n")
    if report:
        from .report import write_reports

        write_reports(doc, out_dir)
    return doc
