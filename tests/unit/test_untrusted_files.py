"""Untrusted files cannot run code: crafted weights and data files, and a source audit.

The crafted weights file carries a pickle whose unpickling calls ``exec`` to write a marker
file. A control test shows that the payload is live (an unsafe ``torch.load`` runs it);
every poisonlab entry point must refuse the file with one line and leave no marker.
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from poisonlab import build_model
from poisonlab.cli import main
from poisonlab.data import load_npz
from poisonlab.errors import ConfigError, DataError, PoisonlabError
from poisonlab.harness import load_suite
from poisonlab.models import load_weights

from ..bad_inputs.payloads import RunsCode, malicious_weights

PACKAGE = Path(__file__).resolve().parents[2] / "poisonlab"


def _model() -> torch.nn.Module:
    return build_model("mlp", (4,), 3, hidden=[8], seed=0)


def test_the_payload_is_live_when_loaded_unsafely(tmp_path: Path):
    path, marker = malicious_weights(tmp_path)
    torch.load(path, weights_only=False)  # what poisonlab never does
    assert marker.read_text() == "payload ran"


@pytest.mark.parametrize("fmt", ["zip", "legacy", "plain pickle"])
def test_load_weights_refuses_code_and_the_payload_does_not_run(tmp_path: Path, fmt: str):
    marker = tmp_path / "PWNED"
    state = {"0.weight": torch.zeros(2, 2), "0.bias": RunsCode(marker)}
    path = tmp_path / "evil.pt"
    if fmt == "plain pickle":
        path.write_bytes(pickle.dumps(state, protocol=2))  # torch.load's own protocol
    else:
        torch.save(state, path, _use_new_zipfile_serialization=fmt == "zip")
    with pytest.raises(ConfigError, match=r"refused by torch\.load\(weights_only=True\)"):
        load_weights(_model(), path)
    assert not marker.exists()


def test_cli_evaluate_refuses_it_and_the_payload_does_not_run(tmp_path: Path, capsys):
    path, marker = malicious_weights(tmp_path)
    x = np.random.default_rng(0).random((30, 4), dtype=np.float32)
    y = np.arange(30) % 3
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    code = main(["evaluate", "--model", "mlp", "--weights", str(path), "--data",
                 str(tmp_path / "d.npz"), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "refused by torch.load" in err
    assert not marker.exists()
    assert not (tmp_path / "out" / "results.json").exists()


def test_a_suite_naming_the_file_refuses_it_before_any_cell(tmp_path: Path, capsys):
    path, marker = malicious_weights(tmp_path)
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: s\nversion: 1\ndescription: d\ndatasets: [{name: blobs, n_samples: 60}]\n"
        f"models: [{{name: mlp, hidden: [2], weights: {path}}}]\n"
        "training: {epochs: 1}\ndefenses: [none]\nseeds: [0]\n")
    code = main(["run", str(suite), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "refused by torch.load" in err, err
    assert not marker.exists()


def test_npz_with_a_pickled_object_array_is_refused(tmp_path: Path):
    marker = tmp_path / "PWNED"
    x = np.empty(3, dtype=object)
    x[:] = [RunsCode(marker)] * 3
    y = np.arange(3)
    np.savez(tmp_path / "evil.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError, match=r"allow_pickle=False"):
        load_npz(tmp_path / "evil.npz")
    assert not marker.exists()


def test_yaml_tags_that_build_objects_are_refused(tmp_path: Path):
    marker = tmp_path / "PWNED"
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: !!python/object/apply:builtins.exec\n"
        f"  - \"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran')\"\n")
    with pytest.raises(PoisonlabError, match=r"malformed YAML"):
        load_suite(suite)
    assert not marker.exists()


# --------------------------------------------------------------------------- source audit

#: Calls that run code or deserialise objects: never in library code.
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "breakpoint"}
FORBIDDEN_ATTRS = {("pickle", "load"), ("pickle", "loads"), ("yaml", "load"),
                   ("yaml", "unsafe_load"), ("yaml", "full_load"), ("os", "system"),
                   ("os", "popen"), ("marshal", "loads"), ("shelve", "open"),
                   ("dill", "load"), ("joblib", "load")}


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _name(call: ast.Call) -> tuple[str, str] | str | None:
    f = call.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        return f.value.id, f.attr
    return None


def _kw(call: ast.Call, key: str) -> object:
    for k in call.keywords:
        if k.arg == key and isinstance(k.value, ast.Constant):
            return k.value.value
    return "missing"


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_audit_sees_the_package():
    assert len(SOURCES) > 30
    assert any(p.name == "models.py" for p in SOURCES)


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(PACKAGE)) for p in SOURCES])
def test_no_code_execution_or_unsafe_deserialisation_in_the_package(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    safe_loaders = {c.name for c in ast.walk(tree) if isinstance(c, ast.ClassDef) and any(
        ast.unparse(b) in ("yaml.SafeLoader", "yaml.CSafeLoader") for b in c.bases)}
    bad = []
    for call in _calls(tree):
        name = _name(call)
        where = f"{path.relative_to(PACKAGE)}:{call.lineno}"
        loader = next((ast.unparse(k.value) for k in call.keywords if k.arg == "Loader"), "")
        if name == ("yaml", "load") and loader in {"yaml.SafeLoader", *safe_loaders}:
            continue  # safe_load with a SafeLoader subclass of the module's own
        if name in FORBIDDEN_CALLS or name in FORBIDDEN_ATTRS:
            bad.append(f"{where} calls {name}")
        if name == ("torch", "load") and _kw(call, "weights_only") is not True:
            bad.append(f"{where} torch.load without weights_only=True")
        if name == ("np", "load") and _kw(call, "allow_pickle") is not False:
            bad.append(f"{where} np.load without allow_pickle=False")
        if _kw(call, "shell") is True:
            bad.append(f"{where} runs a shell")
    assert not bad, bad
