"""Bring your own model and data: .npz and "module:function" datasets, "module:factory"
models with a state_dict, ``poisonlab evaluate`` without training, and the error paths."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import torch
from torch import nn

from poisonlab.cli import main
from poisonlab.data import load_dataset, load_npz
from poisonlab.errors import ConfigError, DataError, UnknownNameError
from poisonlab.harness.pretrained import evaluate_model
from poisonlab.models import build_model
from poisonlab.threat import EvasionThreat

from .byo_helpers import NotAStateDict, blobs, make_net
from .conftest import write_suite

FACTORY = "tests.integration.byo_helpers:make_net"
DATA_FN = "tests.integration.byo_helpers:blobs"


def schema() -> dict[str, Any]:
    text = resources.files("poisonlab").joinpath("schemas/results.schema.json").read_text()
    return json.loads(text)


@pytest.fixture
def npz(tmp_path: Path) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **blobs(seed=0))
    return path


def train_net(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)  # test code: the global seed is ours to set
    net = make_net((2,), 3)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


@pytest.fixture
def trained(tmp_path: Path, npz: Path) -> tuple[Path, float]:
    """Weights of a model trained by the test, and its own test accuracy."""
    d = np.load(npz)
    net = train_net(torch.from_numpy(d["x_train"]), torch.from_numpy(d["y_train"]))
    with torch.no_grad():
        pred = net(torch.from_numpy(d["x_test"])).argmax(1).numpy()
    acc = float((pred == d["y_test"]).mean())
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    return path, acc


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- data


def test_npz_keeps_test_split_and_splits_validation(npz: Path):
    ds = load_npz(npz, seed=3)
    d = np.load(npz)
    assert torch.equal(ds.x_test, torch.from_numpy(d["x_test"]))
    assert len(ds.y_train) + len(ds.y_val) == len(d["y_train"])
    assert len(ds.y_val) == round(len(d["y_train"]) * 0.10 / 0.75)
    assert set(ds.y_val.tolist()) == {0, 1, 2}  # stratified
    assert ds.bounds == (0.0, 1.0) and ds.n_classes == 3 and ds.input_shape == (2,)
    again = load_npz(npz, seed=3)
    assert torch.equal(ds.x_val, again.x_val)
    assert load_dataset("npz", path=str(npz), seed=3).summary() == ds.summary()


def test_bounds_default_to_the_data_range(tmp_path: Path):
    arrays = blobs(seed=0)
    del arrays["bounds"]
    arrays["x_val"], arrays["y_val"] = arrays["x_test"], arrays["y_test"]
    np.savez(tmp_path / "d.npz", **arrays)
    ds = load_npz(tmp_path / "d.npz")
    xs = np.concatenate([arrays["x_train"], arrays["x_test"]])
    assert ds.bounds == (float(xs.min()), float(xs.max()))
    assert ds.meta["val_split"] == "given"
    assert load_npz(tmp_path / "d.npz", bounds=(-1, 2)).bounds == (-1.0, 2.0)


def test_module_function_dataset():
    ds = load_dataset(DATA_FN, seed=1, n=300)
    assert ds.name == DATA_FN and len(ds.y_test) == 75 and ds.n_classes == 3


@pytest.mark.parametrize(("change", "match"), [
    (lambda a: a.pop("y_test"), "no array 'y_test'"),
    (lambda a: a.update(x_tst=a["x_test"]), "unknown array 'x_tst'"),
    (lambda a: a.update(y_test=a["y_test"][:-1]), "y_test has shape"),
    (lambda a: a.update(x_test=a["x_test"][:, :1]), "x_test has shape"),
    (lambda a: a["x_train"].__setitem__((0, 0), np.nan), "x_train contains 1 NaN"),
    (lambda a: a["y_test"].__setitem__(0, -1), "y_test has labels in"),
    (lambda a: a.update(y_train=a["y_train"] * 2), "no example of class 1"),
    (lambda a: a.update(y_val=a["y_test"]), "no array 'x_val'"),
    (lambda a: a.update(bounds=np.array([0.0, 0.5])), "x_train has values in"),
])
def test_npz_errors_name_the_array(tmp_path: Path, change, match):
    arrays = blobs(seed=0)
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=match):
        load_npz(tmp_path / "bad.npz")


def test_npz_missing_or_not_npz(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        load_npz(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"cannot be read as \.npz"):
        load_npz(tmp_path / "junk.npz")


# --------------------------------------------------------------------------- models


def test_factory_with_weights(trained: tuple[Path, float]):
    path, _ = trained
    m = build_model(FACTORY, (2,), 3, weights=path)
    state = torch.load(path, weights_only=True)
    assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())
    # Without weights: seeded default initialisation, the global RNG untouched.
    before = torch.random.get_rng_state()
    a, b = build_model(FACTORY, (2,), 3, seed=1), build_model(FACTORY, (2,), 3, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    with pytest.raises(ConfigError, match="unknown parameter 'width'"):
        build_model(FACTORY, (2,), 3, width=3)


def test_weights_that_do_not_fit(trained: tuple[Path, float], tmp_path: Path):
    path, _ = trained
    with pytest.raises(ConfigError, match="do not fit the model"):  # hidden 8, not 16
        build_model(FACTORY, (2,), 3, hidden=8, weights=path)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ConfigError, match="not a mapping of names to tensors"):
        build_model(FACTORY, (2,), 3, weights=tmp_path / "list.pt")


def test_unknown_module_and_attribute():
    with pytest.raises(UnknownNameError, match=r"module 'no_such_pkg\.models' cannot be"):
        build_model("no_such_pkg.models:make", (2,), 3)
    with pytest.raises(UnknownNameError, match="has no attribute 'make_nett'"):
        build_model("tests.integration.byo_helpers:make_nett", (2,), 3)


def test_evaluate_model_api(trained: tuple[Path, float], npz: Path):
    path, acc = trained
    ds = load_npz(npz)
    net = build_model(FACTORY, ds.input_shape, ds.n_classes, weights=path)
    threats = [EvasionThreat("linf", e, ds.bounds) for e in (0.0, 0.1)]
    recs = evaluate_model(net, ds, threats=threats, attacks=["fgsm", "pgd"], seed=0,
                          n_noise=50)
    by = {(r["metric"], r["threat"], r["attack"]): r["value"] for r in recs}
    assert by[("clean_accuracy", None, None)] == pytest.approx(acc)
    assert by[("robust_accuracy", "linf eps=0", "worst-case")] == pytest.approx(acc)
    assert by[("robust_accuracy", "linf eps=0.1", "worst-case")] <= acc
    assert recs == evaluate_model(net, ds, threats=threats, attacks=["fgsm", "pgd"], seed=0,
                                  n_noise=50)
    with pytest.raises(ConfigError, match="expected logits of shape"):
        evaluate_model(make_net((2,), 5), ds)


# --------------------------------------------------------------------------- CLI


def test_cli_evaluate(trained: tuple[Path, float], npz: Path, tmp_path: Path, capsys):
    path, acc = trained
    out = tmp_path / "ev"
    code, stdout, err = run(["evaluate", "--model", FACTORY, "--weights", str(path),
                             "--data", str(npz), "--eps", "0.05", "0.1", "--attacks",
                             "fgsm", "pgd", "--n-noise", "50", "--out", str(out)], capsys)
    assert code == 0, err
    doc = json.loads((out / "results.json").read_text())
    jsonschema.validate(doc, schema())
    assert doc["n_cells"] == 1 and doc["cells"][0]["defense"]["name"] == "pretrained"
    ms = doc["cells"][0]["metrics"]
    clean = [m["value"] for m in ms if m["metric"] == "clean_accuracy"]
    assert clean == [pytest.approx(acc)]
    robust = {(m["threat"], m["attack"]) for m in ms if m["metric"] == "robust_accuracy"}
    assert robust == {(f"linf eps={e}", a) for e in ("0.05", "0.1")
                      for a in ("fgsm", "pgd", "worst-case")}
    assert {m["metric"] for m in ms} >= {"ece", "offmanifold_confidence"}
    assert (out / "report.md").is_file() and "pretrained" in stdout


@pytest.mark.parametrize(("args", "match"), [
    (["--weights", "{tmp}/missing.pt"], "weights='.*missing.pt' does not exist"),
    (["--weights", "{tmp}/object.pt"], "refused by torch.load\\(weights_only=True\\)"),
    (["--data", "{tmp}/no_y_test.npz"], "no array 'y_test'"),
    (["--model", "no_such_pkg.nets:make"], "no_such_pkg"),
    (["--data", "no_such_pkg.data:load"], "no_such_pkg"),
    (["--eps", "-0.1"], "eps"),
    (["--model", "tests.integration.byo_helpers:blobs"], "model '.*:blobs' cannot be called"),
    (["--data", "tests.integration.byo_helpers:make_net"], "dataset '.*:make_net' cannot be"),
    (["--attacks", "pgdd"], "pgdd"),
])
def test_cli_evaluate_bad_input(trained: tuple[Path, float], npz: Path, tmp_path: Path,
                                capsys, args: list[str], match: str):
    import re

    path, _ = trained
    torch.save(NotAStateDict(), tmp_path / "object.pt")
    arrays = blobs(seed=0)
    del arrays["y_test"]
    np.savez(tmp_path / "no_y_test.npz", **arrays)
    opts = {"--model": FACTORY, "--weights": str(path), "--data": str(npz), "--eps": "0.1"}
    given = dict(zip(args[::2], (a.format(tmp=tmp_path) for a in args[1::2]), strict=True))
    argv = ["evaluate", "--out", str(tmp_path / "out")]
    for k, v in {**opts, **given}.items():
        argv += [k, v]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and re.search(match, err), err
    assert not (tmp_path / "out").exists()


def test_suite_with_npz_data_and_factory(trained: tuple[Path, float], npz: Path,
                                         tmp_path: Path, capsys):
    path, _ = trained
    suite = write_suite(tmp_path, {
        "name": "byo", "version": 1,
        "datasets": [{"name": "npz", "path": str(npz)}, {"name": DATA_FN, "n": 150}],
        "models": [{"name": FACTORY, "weights": str(path)}, {"name": FACTORY, "hidden": 8}],
        "training": {"epochs": 2, "batch_size": 32, "lr": 0.01},
        "defenses": ["none"],
        "threat_model": {"poisoning": [{"strategy": "random", "rate": 0.2}],
                         "evasion": [{"norm": "linf", "eps": [0.1]}]},
        "attacks": ["fgsm"], "seeds": [0], "offmanifold": {"n_noise": 20},
    })
    out = tmp_path / "run"
    code, _, err = run(["run", str(suite), "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    doc = json.loads((out / "results.json").read_text())
    jsonschema.validate(doc, schema())
    assert doc["n_cells"] == 8 and doc["n_failed"] == 0


@pytest.mark.parametrize(("entry", "match"), [
    ({"datasets": [{"name": "npz", "path": "nope.npz"}]}, r"datasets\[0\]: path='nope.npz'"),
    ({"models": [{"name": FACTORY, "weights": "nope.pt"}]}, r"models\[0\]: weights='nope.pt'"),
    ({"models": ["no_such_pkg.nets:make"]}, r"models\[0\].*no_such_pkg.nets"),
    ({"datasets": [{"name": DATA_FN, "size": 3}]}, r"unknown parameter 'size'"),
])
def test_suite_byo_errors(tmp_path: Path, capsys, entry: dict[str, Any], match: str):
    import re

    base = {"name": "byo", "version": 1, "datasets": ["blobs"], "models": [FACTORY],
            "defenses": ["none"], "seeds": [0]}
    suite = write_suite(tmp_path, {**base, **entry})
    code, _, err = run(["validate", str(suite)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(match, err), err


def test_evaluate_report_speaks_of_one_pretrained_model(
    tmp_path: Path, npz: Path, trained: tuple[Path, float], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    code, _, err = run(["evaluate", "--model", FACTORY, "--weights", str(trained[0]),
                        "--data", str(npz), "--eps", "0.1", "--out", str(out), "--quiet"],
                       capsys)
    assert code == 0, err
    report = (out / "report.md").read_text()
    assert "One pretrained model evaluated as given" in report
    assert "### Pretrained model" in report
    assert "nothing to compare against" not in report and "Clean training" not in report
