"""``poisonlab evaluate --data DIR`` on image folders and .npy folders, and the same sources
as suite datasets, end to end through the CLI."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import torch
from PIL import Image

from poisonlab.cli import main
from poisonlab.errors import EvaluationWarning

from .byo_helpers import make_net
from .conftest import write_suite

FACTORY = "tests.integration.byo_helpers:make_net"
CLASSES = ("zebra", "ant", "moth")  # ids follow the sorted names: ant 0, moth 1, zebra 2


def write_split(root: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n 8x8 RGB PNGs per class under root/<class>/; returns the uint8 images and labels."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / c / f"{i}.png")
            xs.append(a)
            ys.append(sorted(CLASSES).index(c))
    return np.stack(xs), np.array(ys)


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    """An image folder (train/ 5 and test/ 3 per class), a model's weights and its accuracy
    on the test images computed here from the written pixels."""
    root = tmp_path / "imgs"
    write_split(root / "train", 5, seed=0)
    x_test, y_test = write_split(root / "test", 3, seed=1)
    torch.manual_seed(0)  # test code: the global seed is ours to set
    net = make_net((3, 8, 8), 3).eval()
    weights = tmp_path / "net.pt"
    torch.save(net.state_dict(), weights)
    x = torch.from_numpy(np.transpose(x_test, (0, 3, 1, 2)).astype(np.float32) / 255)
    with torch.no_grad():
        acc = float((net(x).argmax(1).numpy() == y_test).mean())
    return {"root": root, "weights": weights, "acc": acc, "x_test": x_test, "y_test": y_test}


def evaluate(setup: dict[str, Any], data: Path, out: Path, capsys) -> tuple[int, str]:
    code = main(["evaluate", "--model", FACTORY, "--weights", str(setup["weights"]),
                 "--data", str(data), "--eps", "0.03", "--attacks", "fgsm", "--n-noise", "20",
                 "--out", str(out), "--quiet"])
    return code, capsys.readouterr().err


def metrics(out: Path) -> tuple[dict[str, Any], dict[tuple[str, Any], Any]]:
    doc = json.loads((out / "results.json").read_text())
    schema = json.loads(resources.files("poisonlab").joinpath(
        "schemas/results.schema.json").read_text())
    jsonschema.validate(doc, schema)
    cell = doc["cells"][0]
    return cell, {(m["metric"], m["threat"]): m["value"] for m in cell["metrics"]}


def test_evaluate_image_folder_with_splits(setup, tmp_path: Path, capsys):
    out = tmp_path / "ev"
    code, err = evaluate(setup, setup["root"], out, capsys)
    assert code == 0, err
    cell, by = metrics(out)
    assert cell["dataset"] == {"name": "image_folder", "params": {"root": str(setup["root"])}}
    assert cell["dataset_summary"]["n_test"] == 9 and cell["dataset_summary"]["bounds"] == [0, 1]
    assert by[("clean_accuracy", None)] == pytest.approx(setup["acc"])
    assert by[("robust_accuracy", "linf eps=0.03")] <= by[("clean_accuracy", None)]
    assert by[("gaussian_confidence", "gaussian")] is not None


def test_evaluate_test_only_image_folder(setup, tmp_path: Path, capsys):
    out = tmp_path / "ev"
    with pytest.warns(EvaluationWarning, match="mutual_information is undefined"):
        code, err = evaluate(setup, setup["root"] / "test", out, capsys)
    assert code == 0, err
    cell, by = metrics(out)
    assert cell["dataset_summary"]["n_train"] == 0 and cell["dataset_summary"]["n_test"] == 9
    assert by[("clean_accuracy", None)] == pytest.approx(setup["acc"])
    # What needs the training or validation split is missing (null), the rest is measured.
    for m in (("gaussian_confidence", "gaussian"), ("mutual_information", None),
              ("temperature", None)):
        assert by[m] is None
    assert by[("offmanifold_confidence", "uniform")] is not None


def test_evaluate_npy_folder(setup, tmp_path: Path, capsys):
    npy = tmp_path / "arrays"
    npy.mkdir()
    np.save(npy / "x_test.npy", np.transpose(setup["x_test"], (0, 3, 1, 2)))  # uint8 NCHW
    np.save(npy / "y_test.npy", setup["y_test"])
    out = tmp_path / "ev"
    with pytest.warns(EvaluationWarning, match="mutual_information"):
        code, err = evaluate(setup, npy, out, capsys)
    assert code == 0, err
    cell, by = metrics(out)
    assert cell["dataset"] == {"name": "npy", "params": {"path": str(npy)}}
    assert by[("clean_accuracy", None)] == pytest.approx(setup["acc"])


def test_evaluate_bad_folder_is_one_line(setup, tmp_path: Path, capsys):
    (setup["root"] / "test" / "ant" / "notes.txt").write_text("not an image")
    out = tmp_path / "ev"
    code, err = evaluate(setup, setup["root"], out, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(r"notes\.txt' cannot be read by Pillow", err) and not out.exists()
    (tmp_path / "empty").mkdir()
    code, err = evaluate(setup, tmp_path / "empty", out, capsys)
    assert code == 2 and "has no class folders" in err and len(err.strip().splitlines()) == 1


def test_suite_datasets_image_folder_and_npy(setup, tmp_path: Path, capsys):
    npy = tmp_path / "arrays"
    npy.mkdir()
    rng = np.random.default_rng(0)
    for s, n in (("train", 30), ("test", 12)):
        np.save(npy / f"x_{s}.npy", rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8))
        np.save(npy / f"y_{s}.npy", np.arange(n) % 3)
    base = {"name": "real", "version": 1, "models": [FACTORY], "defenses": ["none"],
            "seeds": [0]}
    suite = write_suite(tmp_path, {**base, "datasets": [
        {"name": "image_folder", "root": str(setup["root"]), "size": [4, 4]},
        {"name": "npy", "path": str(npy)}]})
    assert main(["validate", str(suite)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    bad = write_suite(tmp_path, {**base, "datasets": [
        {"name": "image_folder", "root": str(tmp_path / "nope")}]}, name="bad.yaml")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "does not exist" in err, err
