"""A built-in residual network end to end: a saved ``preact_resnet18`` state_dict as a
suite's starting weights and under ``poisonlab evaluate`` (3x8x8 toy images, 4 classes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from poisonlab import build_model, get_defense, train
from poisonlab.cli import main

from .conftest import write_suite

pytestmark = pytest.mark.slow

SHAPE = (3, 8, 8)
K = 4
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def toy_images(seed: int, n_train: int = 40, n_test: int = 8) -> dict[str, np.ndarray]:
    """Four classes, each a fixed random pattern plus noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0.2, 0.8, (K, *SHAPE))
    y = np.arange(n_train + n_test) % K
    x = np.clip(patterns[y] + rng.normal(0, 0.1, (len(y), *SHAPE)), 0, 1).astype(np.float32)
    return {"x_train": x[:n_train], "y_train": y[:n_train], "x_test": x[n_train:],
            "y_test": y[n_train:], "bounds": np.array([0.0, 1.0])}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The data file, and the weights of a preact_resnet18 trained by the test on it with
    its own test accuracy."""
    root = tmp_path_factory.mktemp("arch")
    arrays = toy_images(seed=0)
    np.savez(root / "data.npz", **arrays)
    model = build_model("preact_resnet18", SHAPE, K, seed=0)
    x, y = torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"])
    model = train(model, x, y, defense=get_defense("none"), epochs=3, batch_size=20, lr=1e-3)
    with torch.no_grad():
        pred = model(torch.from_numpy(arrays["x_test"])).argmax(1).numpy()
    torch.save(model.state_dict(), root / "net.pt")
    return {"data": root / "data.npz", "weights": root / "net.pt",
            "acc": float((pred == arrays["y_test"]).mean())}


def by_key(metrics: list[dict[str, Any]]) -> dict[tuple[Any, Any, Any], float]:
    return {(m["metric"], m["threat"], m["attack"]): m["value"] for m in metrics}


def test_suite_trains_a_builtin_resnet_from_saved_weights(files: dict[str, Any],
                                                          tmp_path: Path, capsys) -> None:
    suite = write_suite(tmp_path, {
        "name": "arch", "version": 1,
        "datasets": [{"name": "npz", "path": str(files["data"])}],
        # mean/std add a Normalize in front: the weights' layout fits all the same.
        "models": [{"name": "preact_resnet18", "weights": str(files["weights"]),
                    "mean": MEAN, "std": STD}],
        "training": {"epochs": 1, "batch_size": 16, "lr": 1e-3},
        "defenses": ["none"],
        "threat_model": {"evasion": [{"norm": "linf", "eps": [0.03]}]},
        "attacks": ["fgsm"], "seeds": [0],
        "offmanifold": {"n_noise": 20},
    })
    out = tmp_path / "run"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    doc = json.loads((out / "results.json").read_text())
    assert doc["n_cells"] == 1 and doc["n_failed"] == 0
    cell = doc["cells"][0]
    assert cell["model"]["name"] == "preact_resnet18"
    got = by_key(cell["metrics"])
    clean = got[("clean_accuracy", None, None)]
    robust, = (v for (m, threat, _), v in got.items()
               if m == "robust_accuracy" and threat == "linf eps=0.03")
    assert 0.0 <= robust <= clean <= 1.0
    assert all(np.isfinite(v) for v in got.values())


def test_evaluate_takes_a_builtin_name_and_its_weights(files: dict[str, Any], tmp_path: Path,
                                                       capsys) -> None:
    # The weights' own test accuracy, measured by the fixture, is what evaluate reports.
    acc = files["acc"]
    out = tmp_path / "ev"
    code = main(["evaluate", "--model", "preact_resnet18", "--weights", str(files["weights"]),
                 "--data", str(files["data"]), "--eps", "0", "0.03", "--attacks", "fgsm",
                 "--n-noise", "20", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out / "results.json").read_text())
    assert doc["n_cells"] == 1 and doc["cells"][0]["model"]["name"] == "preact_resnet18"
    got = by_key(doc["cells"][0]["metrics"])
    assert got[("clean_accuracy", None, None)] == pytest.approx(acc)
    assert got[("robust_accuracy", "linf eps=0", "fgsm")] == pytest.approx(acc)
    assert got[("robust_accuracy", "linf eps=0.03", "fgsm")] <= acc


def test_evaluate_passes_model_params_to_the_architecture(files: dict[str, Any],
                                                          tmp_path: Path, capsys) -> None:
    # mean/std put a Normalize in front; its buffers are not in the state_dict, so the same
    # weights load (strict) and the model sees (x - mean) / std.
    out = tmp_path / "ev"
    code = main(["evaluate", "--model", "preact_resnet18", "--weights", str(files["weights"]),
                 "--model-param", f"mean={MEAN}", "--model-param", f"std={STD}",
                 "--data", str(files["data"]), "--n-noise", "20", "--out", str(out),
                 "--quiet"])
    assert code == 0, capsys.readouterr().err
    model = json.loads((out / "results.json").read_text())["cells"][0]["model"]
    assert model["params"] == {"mean": MEAN, "std": STD, "weights": str(files["weights"])}
    net = build_model("preact_resnet18", SHAPE, K, seed=0, mean=MEAN, std=STD,
                      weights=files["weights"])
    x = torch.full((1, *SHAPE), 0.75)
    plain = build_model("preact_resnet18", SHAPE, K, seed=0, weights=files["weights"])
    with torch.no_grad():  # the same weights fed (x - 0.5) / 0.25 = 1.0 everywhere
        assert torch.allclose(net.eval()(x), plain.eval()(torch.ones_like(x)), atol=1e-5)


def test_cli_lists_the_architectures(capsys) -> None:
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    for name in ("resnet18", "preact_resnet18", "wide_resnet"):
        assert f"  {name} " in out
    assert "widen_factor" in out
