"""The torchvision:/timm: resolver without the libraries: stand-in packages on sys.path
check what is passed through and that a missing or mismatched library is one line."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from poisonlab import build_model
from poisonlab.cli import main
from poisonlab.errors import ConfigError


def fake_package(root: Path, name: str, code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``root/name/__init__.py`` with ``code``, importable ahead of any installed copy."""
    (root / name).mkdir()
    (root / name / "__init__.py").write_text(textwrap.dedent(code))
    monkeypatch.syspath_prepend(str(root))
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        monkeypatch.delitem(sys.modules, mod)


FAKE_TORCHVISION = """
    import types
    import torch

    calls = []

    def get_model(name, **kwargs):
        calls.append((name, kwargs))
        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                   torch.nn.Linear(3, kwargs["num_classes"]))

    def list_models(module=None):
        return ["resnet18", "resnet50", "vit_b_16"]

    models = types.SimpleNamespace(get_model=get_model, list_models=list_models)
"""

FAKE_TIMM = """
    import torch

    calls = []

    def create_model(name, **kwargs):
        calls.append((name, kwargs))
        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                   torch.nn.Linear(kwargs["in_chans"], kwargs["num_classes"]))

    def list_models():
        return ["resnet18", "vit_tiny_patch16_224"]
"""


def test_torchvision_gets_our_classes_no_weights_and_a_seeded_init(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_package(tmp_path, "torchvision", FAKE_TORCHVISION, monkeypatch)
    model = build_model("torchvision:resnet50", (3, 32, 32), 7, seed=1, zero_init_residual=True)
    import torchvision

    assert torchvision.calls == [("resnet50", {"weights": None, "num_classes": 7,
                                               "zero_init_residual": True})]
    assert not model.training
    out = model(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 7)
    with pytest.raises(ConfigError, match="3-channel images: got input_shape"):
        build_model("torchvision:resnet18", (1, 28, 28), 10)
    with pytest.raises(ConfigError, match="takes images: expected input_shape"):
        build_model("torchvision:resnet18", (64,), 10)
    with pytest.raises(ConfigError, match="did you mean 'torchvision:resnet18'"):
        build_model("torchvision:resnet19", (3, 32, 32), 10)


def test_mean_and_std_go_in_front_without_changing_the_state_dict(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_package(tmp_path, "torchvision", FAKE_TORCHVISION, monkeypatch)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    plain = build_model("torchvision:resnet50", (3, 8, 8), 5, seed=2)
    torch.save(plain.state_dict(), tmp_path / "w.pt")
    norm = build_model("torchvision:resnet50", (3, 8, 8), 5, seed=9, mean=mean, std=std,
                       weights=tmp_path / "w.pt")  # strict load: the same keys
    assert norm.state_dict().keys() == plain.state_dict().keys()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(norm(x), plain((x - m) / s), atol=1e-6)
    with pytest.raises(ConfigError, match=r"std=.*expected 3 numbers, one per channel"):
        build_model("torchvision:resnet50", (3, 8, 8), 5, std=[0.5])


def test_timm_gets_in_chans_from_the_data_and_never_pretrained(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_package(tmp_path, "timm", FAKE_TIMM, monkeypatch)
    build_model("timm:vit_tiny_patch16_224", (1, 28, 28), 10, img_size=28)
    import timm

    assert timm.calls == [("vit_tiny_patch16_224", {"pretrained": False, "num_classes": 10,
                                                    "in_chans": 1, "img_size": 28})]
    for key in ("pretrained", "in_chans", "num_classes"):
        with pytest.raises(ConfigError, match=f"parameter {key!r}: it is set by poisonlab"):
            build_model("timm:resnet18", (3, 32, 32), 10, **{key: 1})


def test_a_torchvision_built_for_another_torch_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    # What PyPI's torchvision does next to the CPU-only torch 2.13.0.
    fake_package(tmp_path, "torchvision", 'raise RuntimeError("operator torchvision::nms does '
                 'not exist")\n', monkeypatch)
    with pytest.raises(ConfigError) as info:
        build_model("torchvision:resnet18", (3, 32, 32), 10)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"cannot be imported next to torch {torch.__version__}" in msg
    assert "operator torchvision::nms does not exist" in msg
    assert "torch==2.14.1 torchvision==0.29.1" in msg
    torch.save({}, tmp_path / "net.pt")
    code = main(["evaluate", "--model", "torchvision:resnet18", "--weights",
                 str(tmp_path / "net.pt"), "--data", "digits", "--quiet",
                 "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "operator torchvision::nms" in err


def test_a_missing_library_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ModuleNotFoundError
    with pytest.raises(ConfigError, match=r"^models timm:<model> need timm, which is not "
                                          r"installed: install the vision extra"):
        build_model("timm:resnet18", (3, 32, 32), 10)


def test_the_namespaces_are_listed(capsys) -> None:
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert "torchvision:<model>" in out and "timm:<model>" in out
