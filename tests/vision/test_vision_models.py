"""torchvision and timm classifiers through build_model, a suite and ``poisonlab evaluate``.

Run by ``make test-vision`` (``.venv-vision``: torch 2.14.1, torchvision 0.29.1, timm);
skipped elsewhere (see conftest). Tiny inputs keep each test to seconds on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from poisonlab import EvasionThreat, build_model, get_attack, security_curve
from poisonlab.cli import main
from poisonlab.errors import ConfigError

from ..integration.conftest import write_suite

pytestmark = pytest.mark.vision

K = 4


def images(shape: tuple[int, ...], n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four classes, each a fixed random pattern plus noise, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.rand((K, *shape), generator=g)
    y = torch.arange(n) % K
    x = (patterns[y] + 0.1 * torch.randn((n, *shape), generator=g)).clamp(0, 1)
    return x, y


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(("name", "shape", "params"), [
    ("torchvision:resnet18", (3, 32, 32), {}),
    ("timm:resnet18", (1, 28, 28), {}),  # in_chans from the data
    ("timm:vit_tiny_patch16_224", (3, 32, 32), {"img_size": 32}),
])
def test_a_library_model_is_built_seeded_with_our_classes(name: str, shape: tuple[int, ...],
                                                          params: dict[str, Any]) -> None:
    model = build_model(name, shape, K, seed=3, **params)
    assert not model.training  # BatchNorm/dropout in eval mode, as for the built-ins
    with torch.no_grad():
        out = model(images(shape, 2, seed=0)[0])
    assert out.shape == (2, K) and torch.isfinite(out).all()
    assert same_weights(model, build_model(name, shape, K, seed=3, **params))
    assert not same_weights(model, build_model(name, shape, K, seed=4, **params))


@pytest.mark.parametrize("name", ["torchvision:resnet18", "timm:resnet18"])
def test_mean_and_std_keep_the_library_state_dict(name: str, tmp_path: Path) -> None:
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    plain = build_model(name, (3, 32, 32), K, seed=0)
    torch.save(plain.state_dict(), tmp_path / "w.pt")
    net = build_model(name, (3, 32, 32), K, seed=1, mean=mean, std=std, weights=tmp_path / "w.pt")
    x = images((3, 32, 32), 3, seed=0)[0]
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(net(x), plain((x - m) / s), atol=1e-5)


def test_torchvision_names_are_checked_with_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="3-channel"):
        build_model("torchvision:resnet18", (1, 28, 28), K)
    with pytest.raises(ConfigError, match=r"'num_classes'.*set by poisonlab"):
        build_model("torchvision:resnet18", (3, 32, 32), K, num_classes=1000)
    with pytest.raises(ConfigError, match=r"cannot be built with .*'widht'"):
        build_model("torchvision:resnet18", (3, 32, 32), K, widht=2)
    with pytest.raises(ConfigError, match=r"did you mean 'torchvision:resnet18'"):
        build_model("torchvision:resnet81", (3, 32, 32), K)
    with pytest.raises(ConfigError, match="'pretrained'"):
        build_model("timm:resnet18", (3, 32, 32), K, pretrained=True)


def test_attacks_run_batched_on_a_torchvision_resnet() -> None:
    # BatchNorm in eval mode: the batch a sample is attacked in cannot change its outcome.
    x, y = images((3, 32, 32), 24, seed=1)
    model = build_model("torchvision:resnet18", (3, 32, 32), K, seed=0)
    threat = EvasionThreat(eps=8 / 255)
    pgd = get_attack("pgd", steps=3)
    batched = pgd(model, x, y, threat=threat, seed=0, batch_size=7)
    whole = pgd(model, x, y, threat=threat, seed=0, batch_size=None)
    assert (batched.x_adv - x).abs().max() <= 8 / 255 + 1e-6
    assert torch.equal(batched.success, whole.success)
    curve = security_curve(get_attack("fgsm"), model, x, y, seed=0, batch_size=8,
                           threats=[EvasionThreat(eps=e) for e in (0.0, 4 / 255, 8 / 255)])
    rates = [float(r.success.float().mean()) for r in curve]
    with torch.no_grad():  # at eps 0 the successes are the clean mistakes
        wrong = float((model(x).argmax(1) != y).float().mean())
    assert rates[0] == pytest.approx(wrong) and rates == sorted(rates)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vision")
    x, y = images((3, 32, 32), 48, seed=2)
    np.savez(root / "data.npz", x_train=x[:40].numpy(), y_train=y[:40].numpy(),
             x_test=x[40:].numpy(), y_test=y[40:].numpy(), bounds=np.array([0.0, 1.0]))
    net = build_model("torchvision:resnet18", (3, 32, 32), K, seed=5)
    torch.save(net.state_dict(), root / "net.pt")
    return {"data": root / "data.npz", "weights": root / "net.pt"}


def test_evaluate_runs_a_torchvision_model_from_its_state_dict(files: dict[str, Path],
                                                               tmp_path: Path, capsys) -> None:
    out = tmp_path / "ev"
    code = main(["evaluate", "--model", "torchvision:resnet18", "--weights",
                 str(files["weights"]), "--data", str(files["data"]), "--eps", "0", "0.03",
                 "--attacks", "fgsm", "--n-noise", "20", "--batch-size", "4", "--out",
                 str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    cell = json.loads((out / "results.json").read_text())["cells"][0]
    assert cell["model"]["name"] == "torchvision:resnet18"
    got = {(m["metric"], m["threat"]): m["value"] for m in cell["metrics"]}
    net = build_model("torchvision:resnet18", (3, 32, 32), K, weights=files["weights"])
    data = np.load(files["data"])
    with torch.no_grad():
        pred = net(torch.from_numpy(data["x_test"])).argmax(1).numpy()
    assert got[("clean_accuracy", None)] == pytest.approx(float((pred == data["y_test"]).mean()))
    assert got[("robust_accuracy", "linf eps=0.03")] <= got[("clean_accuracy", None)]


def test_a_suite_trains_a_timm_model(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    suite = write_suite(tmp_path, {
        "name": "vision", "version": 1,
        "datasets": [{"name": "npz", "path": str(files["data"])}],
        "models": [{"name": "timm:resnet18"}],
        "training": {"epochs": 1, "batch_size": 20, "lr": 1e-3},
        "defenses": ["none", {"name": "label_smoothing", "eps": 0.1}],
        "threat_model": {"evasion": [{"norm": "linf", "eps": [0.03]}]},
        "attacks": ["fgsm"], "seeds": [0], "offmanifold": {"n_noise": 20},
    })
    out = tmp_path / "run"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    doc = json.loads((out / "results.json").read_text())
    assert doc["n_cells"] == 2 and doc["n_failed"] == 0
    for cell in doc["cells"]:
        values = [m["value"] for m in cell["metrics"]]
        assert values and all(np.isfinite(v) for v in values)
