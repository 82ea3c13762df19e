"""Suite files and mappings handed to ``poisonlab validate`` / ``run``, load_suite and
parse_suite: every key, every nested spec, YAML itself and ``include:``."""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from poisonlab.errors import ConfigError, SuiteError
from poisonlab.harness import load_suite, parse_suite

from .harness import Case, cli_case

#: A small valid suite: every case changes one thing in it.
BASE: dict[str, Any] = {
    "name": "bad-input",
    "version": 1,
    "datasets": [{"name": "blobs", "n_samples": 200}],
    "models": [{"name": "mlp", "hidden": [8]}],
    "training": {"epochs": 2, "batch_size": 32, "lr": 0.01},
    "defenses": ["none", {"name": "label_smoothing", "eps": 0.1}],
    "threat_model": {
        "poisoning": [{"strategy": "random", "rate": 0.2}],
        "evasion": [{"norm": "linf", "eps": [0.05, 0.1]}],
    },
    "attacks": ["fgsm", {"name": "pgd", "steps": 5}],
    "seeds": [0, 1],
    "offmanifold": {"n_noise": 100},
}

NAN, INF = float("nan"), float("inf")


def suite(**changes: Any) -> dict[str, Any]:
    """BASE with top-level keys replaced (a value of ``...`` deletes the key)."""
    d = copy.deepcopy(BASE)
    for k, v in changes.items():
        if v is ...:
            d.pop(k, None)
        else:
            d[k] = v
    return d


def threats(**changes: Any) -> dict[str, Any]:
    """BASE with threat_model keys replaced (``...`` deletes)."""
    d = copy.deepcopy(BASE)
    for k, v in changes.items():
        if v is ...:
            d["threat_model"].pop(k, None)
        else:
            d["threat_model"][k] = v
    return d


def poison(**entry: Any) -> dict[str, Any]:
    return threats(poisoning=[entry])


def evasion(**entry: Any) -> dict[str, Any]:
    return threats(evasion=[entry])


def _write(tmp: Path, data: dict[str, Any] | str | bytes, name: str = "suite.yaml") -> Path:
    path = tmp / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _empty(tmp: Path) -> Path:
    (tmp / "w.pt").write_bytes(b"")
    return tmp / "w.pt"


def validate(what: str, data: dict[str, Any] | str | bytes, match: str) -> Case:
    """``poisonlab validate`` on ``data`` written to a file."""
    return cli_case("suite", what, lambda tmp: ["validate", _write(tmp, data)], match)


def run(what: str, data: dict[str, Any] | str | bytes, match: str) -> Case:
    """``poisonlab run`` on ``data``: refused before any cell runs."""
    return cli_case("suite", f"{what} (run)", lambda tmp: [
        "run", _write(tmp, data), "--out", tmp / "out", "--quiet"], match)


def api(what: str, data: dict[str, Any], match: str,
        expect: type[BaseException] = ConfigError) -> Case:
    """parse_suite on a mapping (errors of the gate's parsers are ConfigErrors)."""
    return Case("suite", f"{what} (parse_suite)",
                lambda tmp: parse_suite(copy.deepcopy(data)), expect, match)


def load(what: str, files: dict[str, str | bytes], match: str) -> Case:
    """load_suite on ``suite.yaml`` among ``files`` written to the tmp folder."""
    def call(tmp: Path) -> object:
        for name, text in files.items():
            _write(tmp, text, name)
        return load_suite(tmp / "suite.yaml")
    return Case("suite", f"{what} (load_suite)", call, SuiteError, match)


def _text(data: dict[str, Any], fix: Callable[[str], str]) -> str:
    return fix(yaml.safe_dump(data))


BASE_YAML = yaml.safe_dump(BASE)

CASES = [
    # ------------------------------------------------------------------ the file itself
    cli_case("suite", "a suite file that does not exist",
             lambda tmp: ["validate", tmp / "nope.yaml"], r"suite file '.*/nope\.yaml' "
             r"does not exist"),
    cli_case("suite", "a folder instead of a suite file", lambda tmp: ["validate", tmp],
             r"suite file '.*' is a folder: expected a YAML file"),
    validate("an empty suite file", "", r"expected a mapping of suite keys, got NoneType"),
    validate("a suite file that is a YAML list", "- just\n- a list\n",
             r"expected a mapping of suite keys, got list"),
    validate("a suite file that is a bare number", "42\n",
             r"expected a mapping of suite keys, got int"),
    validate("malformed YAML (an unclosed bracket)", "name: x\ndatasets: [digits\n",
             r"malformed YAML at line \d+, column \d+"),
    validate("a tab used for indentation", "name: x\n\tdatasets: [digits]\n",
             r"malformed YAML at line 2, column 1: found character '\\t'"),
    validate("two YAML documents in one file", BASE_YAML + "---\nname: other\n",
             r"malformed YAML at line \d+.*another document"),
    validate("non-UTF-8 bytes", b"name: \xff\xfe\n",
             r"suite file '.*/suite\.yaml' cannot be read: byte 6 is not UTF-8"),
    validate("a YAML tag that would run code (!!python/object/apply)",
             BASE_YAML + "x: !!python/object/apply:os.system ['echo hi']\n",
             r"malformed YAML.*could not determine a constructor for the tag "
             r"'tag:yaml\.org,2002:python/object/apply:os\.system'"),
    validate("a key given twice (seeds:)", BASE_YAML + "seeds: [5]\n",
             r"key 'seeds' is given twice in one mapping \(lines \d+ and \d+\)"),
    validate("a key given twice inside a spec", BASE_YAML.replace(
        "n_samples: 200", "n_samples: 200\n  n_samples: 300"),
        r"key 'n_samples' is given twice"),
    validate("lists nested 5000 deep", "name: " + "[" * 5000 + "]" * 5000 + "\n",
             r"nested too deeply: expected a suite of at most 32 levels"),
    validate("an integer of 5000 digits", BASE_YAML.replace("lr: 0.01", "lr: " + "9" * 5000),
             r"malformed YAML: Exceeds the limit \(4300 digits\)"),
    validate("a recursive YAML alias (seeds: &s [0, *s])", BASE_YAML.replace(
        "seeds:\n- 0\n- 1\n", "seeds: &s [0, *s]\n"),
        r"seeds\[1\] contains itself \(a recursive YAML alias\)"),
    validate("a YAML alias bomb in a parameter", BASE_YAML.replace(
        "n_samples: 200", "n_samples: 200\n  x:\n  - &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
        + "".join(f"  - &{c} [{', '.join(['*' + p] * 10)}]\n"
                  for p, c in zip("abcd", "bcde", strict=True))),
        r"the suite has more than 100000 values \(a YAML alias bomb\?\)"),
    validate("a complex mapping key", BASE_YAML + "? [a, b]\n: 1\n",
             r"malformed YAML at line \d+, column \d+: found unhashable key"),
    validate("an integer mapping key in a parameter", BASE_YAML.replace(
        "n_samples: 200", "n_samples: 200\n  1: 2"),
        r"datasets\[0\]: key 1 is not allowed: expected a string key"),
    validate("a YAML date as a parameter", BASE_YAML.replace("n_samples: 200",
                                                              "n_samples: 2024-01-01"),
             r"datasets\[0\]\.n_samples=datetime\.date\(2024, 1, 1\) is not allowed: expected "
             r"a number, a string"),
    validate("a !!binary value as a parameter", BASE_YAML.replace(
        "n_samples: 200", "n_samples: !!binary aGVsbG8="),
        r"datasets\[0\]\.n_samples=b'hello' is not allowed"),
    validate("a !!set of seeds", BASE_YAML.replace("seeds:\n- 0\n- 1\n", "seeds: !!set {0, 1}\n"),
             r"seeds=\{0, 1\} is not allowed: expected a number.*not a set"),
    # ------------------------------------------------------------------ include
    load("an include that does not exist", {"suite.yaml": "include: base.yaml\nname: x\n"},
         r"suite file '.*/base\.yaml' does not exist"),
    load("a suite that includes itself", {"suite.yaml": "include: suite.yaml\n" + BASE_YAML},
         r"include cycle through .*/suite\.yaml"),
    load("two suites that include each other",
         {"suite.yaml": "include: b.yaml\n" + BASE_YAML, "b.yaml": "include: suite.yaml\n"},
         r"include cycle through .*/suite\.yaml -> .*/b\.yaml"),
    load("include: 3", {"suite.yaml": "include: 3\n" + BASE_YAML},
         r"include=3 is not allowed: expected a file path"),
    load("include: [] (empty)", {"suite.yaml": "include: []\n" + BASE_YAML},
         r"include=\[\] is not allowed: expected a file path or a non-empty list"),
    load("include of a folder", {"suite.yaml": "include: .\n" + BASE_YAML},
         r"suite file '.*' is a folder"),
    load("an include whose YAML is malformed", {"suite.yaml": "include: b.yaml\nname: x\n",
                                                "b.yaml": "datasets: [blobs\n"},
         r".*/b\.yaml: malformed YAML at line"),
    api("include: in a mapping given to parse_suite", suite(include="base.yaml"),
        r"include='base\.yaml' is not allowed here: parse_suite takes a merged mapping",
        SuiteError),
    api("a list instead of a suite mapping", [BASE], r"suite=\[.*\] is not allowed: expected "
        r"a mapping of suite keys", SuiteError),  # type: ignore[arg-type]
    # ------------------------------------------------------------------ top-level keys
    validate("an unknown top-level key", suite(seedz=[0]),
             r"unknown suite key 'seedz'.*did you mean 'seeds'"),
    validate("no name", suite(name=...), r"name=None is not allowed: expected a non-empty "
             r"string"),
    validate("name: 3", suite(name=3), r"name=3 is not allowed: expected a non-empty string"),
    validate("name: '  ' (blank)", suite(name="  "), r"name='  ' is not allowed"),
    validate("version: 2", suite(version=2), r"version=2 is not allowed: expected 1"),
    validate("version: true (YAML true is not 1)", suite(version=True),
             r"version=True is not allowed: expected 1"),
    validate("version: 1.0 (a float)", suite(version=1.0), r"version=1\.0 is not allowed"),
    validate("description: a list", suite(description=["a"]),
             r"description=\['a'\] is not allowed: expected a string"),
    # ------------------------------------------------------------------ datasets
    validate("no datasets", suite(datasets=...), r"datasets is missing: expected a non-empty "
             r"list"),
    validate("datasets: [] (empty)", suite(datasets=[]), r"datasets=\[\] is not allowed: "
             r"expected a non-empty list"),
    validate("datasets: a mapping instead of a list", suite(datasets={"name": "blobs"}),
             r"datasets=\{'name': 'blobs'\} is not allowed: expected a non-empty list"),
    validate("an unknown dataset (did you mean)", suite(datasets=["digitz"]),
             r"datasets\[0\]: dataset='digitz' is not known.*did you mean 'digits'"),
    validate("a dataset entry that is null", suite(datasets=[None]),
             r"datasets\[0\]=None is not allowed: expected a name or a mapping with 'name'"),
    validate("a dataset name that is a number", suite(datasets=[{"name": 3}]),
             r"datasets\[0\]=\{'name': 3\} is not allowed"),
    validate("an unknown dataset parameter", suite(datasets=[{"name": "blobs", "n_sample": 9}]),
             r"datasets\[0\]: dataset 'blobs' got unknown parameter 'n_sample'.*did you mean "
             r"'n_samples'"),
    validate("a dataset parameter given as a string ('300')",
             suite(datasets=[{"name": "blobs", "n_samples": "300"}]),
             r"datasets\[0\]: dataset 'blobs': n_samples='300' is not allowed: expected an "
             r"integer"),
    validate("a dataset parameter given as true", suite(datasets=[{"name": "blobs",
                                                                   "centers": True}]),
             r"centers=True is not allowed: expected an integer"),
    validate("a dataset parameter .nan", BASE_YAML.replace("n_samples: 200",
                                                           "n_samples: 200\n  cluster_std: .nan"),
             r"cluster_std=nan is not allowed: expected a finite number"),
    validate("an npz dataset without a path", suite(datasets=[{"name": "npz"}]),
             r"datasets\[0\]: path=None is not allowed: expected the path of an existing file"),
    validate("an npz dataset whose file does not exist",
             suite(datasets=[{"name": "npz", "path": "nope.npz"}]),
             r"datasets\[0\]: path='nope\.npz' is not allowed: expected the path of an "
             r"existing file"),
    validate("a dataset module that cannot be imported", suite(datasets=["nosuchmod:load"]),
             r"dataset='nosuchmod:load' is not known: module 'nosuchmod' cannot be imported"),
    validate("the same dataset twice", suite(datasets=["moons", "moons"]),
             r"datasets\[1\]=moons is listed twice"),
    # ------------------------------------------------------------------ models
    validate("an unknown model (did you mean)", suite(models=["mlpp"]),
             r"models\[0\]: model='mlpp' is not known.*did you mean 'mlp'"),
    validate("mlp hidden: 16 (a number, not a list)", suite(models=[{"name": "mlp",
                                                                      "hidden": 16}]),
             r"models\[0\]: model 'mlp': hidden=16 is not allowed: expected a list of integers"),
    validate("mlp hidden: [0]", suite(models=[{"name": "mlp", "hidden": [0]}]),
             r"models\[0\]: hidden=0 is not allowed: expected a value in \[1, inf\)"),
    validate("mlp hidden: [1.5]", suite(models=[{"name": "mlp", "hidden": [1.5]}]),
             r"hidden=\[1\.5\] is not allowed: expected a list of integers"),
    validate("cnn channels: [32] (one, not two)", suite(models=[{"name": "cnn",
                                                                 "channels": [32]}]),
             r"models\[0\]: channels=\[32\] is not allowed: expected 2 integers"),
    validate("an unknown model parameter", suite(models=[{"name": "mlp", "hiden": [8]}]),
             r"model 'mlp' got unknown parameter 'hiden'.*did you mean 'hidden'"),
    validate("model weights that do not exist", suite(models=[{"name": "mlp",
                                                               "weights": "nope.pt"}]),
             r"models\[0\]: weights='nope\.pt' is not allowed: expected the path of an existing "
             r"file"),
    cli_case("suite", "model weights that are an empty file", lambda tmp: [
        "validate", _write(tmp, suite(models=[{"name": "mlp", "weights": str(_empty(tmp))}]))],
        r"models\[0\]: weights='.*/w\.pt' cannot be read"),
    # ------------------------------------------------------------------ training
    validate("training: a list", suite(training=[1]),
             r"training=\[1\] is not allowed: expected a mapping"),
    validate("training: [] (empty list, not a mapping)", suite(training=[]),
             r"training=\[\] is not allowed: expected a mapping"),
    validate("training epochs: 0", suite(training={"epochs": 0}),
             r"training: epochs=0 is not allowed: expected a value in \[1, inf\)"),
    validate("training epochs: true", suite(training={"epochs": True}),
             r"training: epochs=True is not allowed: expected an integer"),
    validate("training lr: .inf", BASE_YAML.replace("lr: 0.01", "lr: .inf"),
             r"training: lr=inf is not allowed: expected a finite number"),
    validate("training lr: 1e400 (a string to YAML 1.1)", BASE_YAML.replace("lr: 0.01",
                                                                            "lr: 1e400"),
             r"training: lr='1e400' is not allowed: expected a number"),
    validate("an unknown training key", suite(training={"epoch": 3}),
             r"training got unknown parameter 'epoch'.*did you mean 'epochs'"),
    # ------------------------------------------------------------------ defenses
    validate("no defenses", suite(defenses=...), r"defenses is missing"),
    validate("an unknown defense (did you mean)", suite(defenses=["none", "label_smothing"]),
             r"defenses\[1\].*did you mean 'label_smoothing'"),
    validate("flip_augment alpha: 1.5", suite(defenses=[{"name": "flip_augment",
                                                         "alpha": 1.5}]),
             r"defenses\[0\]: alpha=1\.5 is not allowed"),
    validate("label_smoothing eps: '0.1' (a string)",
             suite(defenses=[{"name": "label_smoothing", "eps": "0.1"}]),
             r"defenses\[0\]: eps='0\.1' is not allowed: expected a number"),
    validate("confidence_penalty beta: -1", suite(defenses=[{"name": "confidence_penalty",
                                                             "beta": -1}]),
             r"defenses\[0\]: beta=-1 is not allowed: expected a value in \[0, inf\)"),
    validate("label_smoothing eps: .nan", BASE_YAML.replace("eps: 0.1\n", "eps: .nan\n"),
             r"defenses\[1\]: eps=nan is not allowed: expected a finite number"),
    validate("an unknown defense parameter (epsilon)",
             suite(defenses=[{"name": "label_smoothing", "epsilon": 0.1}]),
             r"unknown parameter 'epsilon'.*did you mean 'eps'"),
    validate("the same defense twice", suite(defenses=["none", "none"]),
             r"defenses\[1\]=none is listed twice"),
    validate("dpa k: 1", suite(defenses=[{"name": "dpa", "k": 1}]),
             r"defenses\[0\]: k=1 is not allowed"),
    validate("certified flips: [-1]", suite(certified={"flips": [-1]}),
             r"certified\.flips\[0\]=-1 is not allowed: expected a number of flipped "
             r"labels"),
    validate("certified flips: 5 (not a list)", suite(certified={"flips": 5}),
             r"certified\.flips=5 is not allowed: expected a non-empty list"),
    validate("certified with an unknown key", suite(certified={"radii": [1]}),
             r"certified=.* is not allowed: expected \{flips: "),
    # ------------------------------------------------------------------ poisoning
    validate("threat_model: a list", suite(threat_model=[1]),
             r"threat_model=\[1\] is not allowed: expected a mapping"),
    validate("an unknown threat_model key", threats(evasoin=[]),
             r"unknown threat_model key 'evasoin'.*did you mean 'evasion'"),
    validate("poisoning: a mapping instead of a list", threats(
        poisoning={"strategy": "random", "rate": 0.1}),
        r"poisoning=\{.*\} is not allowed: expected a non-empty list"),
    validate("a poisoning entry that is a string", threats(poisoning=["random"]),
             r"threat_model\.poisoning\[0\]='random' is not allowed: expected a mapping"),
    validate("poisoning rate: 1.0", poison(strategy="random", rate=1.0),
             r"poisoning\[0\]: rate=1\.0 is not allowed: expected a value in \[0, 1\)"),
    validate("poisoning rate: -0.1", poison(strategy="random", rate=-0.1),
             r"poisoning\[0\]: rate=-0\.1 is not allowed: expected a value in \[0, 1\)"),
    validate("poisoning rate: 0 (the clean cell)", poison(strategy="random", rate=0),
             r"poisoning\[0\]: rate=0 is not allowed here: the clean cell is always run"),
    validate("poisoning without a rate", poison(strategy="random"),
             r"poisoning\[0\]: rate is missing: expected a fraction"),
    validate("poisoning rate: .nan", BASE_YAML.replace("rate: 0.2", "rate: .nan"),
             r"poisoning\[0\]: rate=nan is not allowed: expected a finite number"),
    validate("poisoning rate: true", poison(strategy="random", rate=True),
             r"poisoning\[0\]: rate=True is not allowed: expected a number"),
    validate("an unknown flip strategy", poison(strategy="randm", rate=0.1),
             r"strategy='randm' is not allowed: expected one of random.*did you mean 'random'"),
    validate("an unknown poisoning key", poison(strategy="random", rate=0.1, sorce=1),
             r"poisoning\[0\]: unknown key 'sorce'.*did you mean 'source'"),
    validate("pairwise without source and target", poison(strategy="pairwise", rate=0.1),
             r"source=None, target=None are not allowed: strategy 'pairwise' needs both"),
    validate("pairwise with source = target", poison(strategy="pairwise", rate=0.1, source=1,
                                                     target=1),
             r"target=1 is not allowed: expected a class other than source=1"),
    validate("pairwise source: -1", poison(strategy="pairwise", rate=0.1, source=-1, target=1),
             r"source=-1 is not allowed: expected a value in \[0, inf\)"),
    validate("source: with strategy random", poison(strategy="random", rate=0.1, source=1),
             r"source=1, target=None are not allowed: only strategy 'pairwise' takes class ids"),
    validate("a noise matrix that is not square", poison(
        strategy="noise_matrix", rate=0.1, noise_matrix=[[0.9, 0.1], [0.1]]),
        r"noise_matrix row 1 has 1 entries: expected 2"),
    validate("a noise matrix with .nan", BASE_YAML.replace(
        "strategy: random", "strategy: noise_matrix\n    noise_matrix: [[.nan, 0.1], "
        "[0.1, 0.9]]"), r"noise_matrix\[0\]\[0\]=nan is not allowed: expected a finite number"),
    validate("max_per_class: 1.5", poison(strategy="adversarial", rate=0.1, max_per_class=1.5),
             r"max_per_class=1\.5 is not allowed: expected a value in \(0, 1\]"),
    validate("attacker knowledge that is not known", poison(strategy="random", rate=0.1,
                                                            knowledge="grey-box"),
             r"knowledge='grey-box' is not allowed: expected one of white-box, transfer, "
             r"black-box"),
    validate("the same poisoning threat twice", threats(
        poisoning=[{"strategy": "random", "rate": 0.1}] * 2),
        r"threat_model\.poisoning\[1\]=random 0\.1 is listed twice"),
    # ------------------------------------------------------------------ evasion
    validate("evasion eps: -0.1", evasion(norm="linf", eps=[-0.1]),
             r"evasion\[0\]: eps=-0\.1 is not allowed: expected a value in \[0, inf\)"),
    validate("evasion eps: .nan", BASE_YAML.replace("- 0.05", "- .nan"),
             r"evasion\[0\]: eps=nan is not allowed: expected a finite number"),
    validate("evasion eps: .inf", BASE_YAML.replace("- 0.05", "- .inf"),
             r"evasion\[0\]: eps=inf is not allowed: expected a finite number"),
    validate("evasion eps: '0.1' (a string)", evasion(norm="linf", eps="0.1"),
             r"evasion\[0\]: eps='0\.1' is not allowed: expected a number"),
    validate("evasion eps: [] (empty)", evasion(norm="linf", eps=[]),
             r"evasion\[0\]: eps=\[\] is not allowed: expected at least one eps"),
    validate("evasion without eps", evasion(norm="linf"),
             r"evasion\[0\]: eps is missing: expected a number >= 0"),
    validate("evasion eps: [true]", evasion(norm="linf", eps=[True]),
             r"evasion\[0\]: eps=True is not allowed: expected a number"),
    validate("an unknown norm", evasion(norm="l3", eps=[0.1]),
             r"evasion\[0\]: norm='l3' is not allowed: expected one of linf, l2"),
    validate("targeted: 'yes' (a string)", evasion(norm="linf", eps=[0.1], targeted="yes"),
             r"targeted='yes' is not allowed: expected true or false"),
    validate("bounds: [1, 0] (lo > hi)", evasion(norm="linf", eps=[0.1], bounds=[1, 0]),
             r"bounds=\[1, 0\] is not allowed: expected lo < hi"),
    validate("bounds: [] (empty)", evasion(norm="linf", eps=[0.1], bounds=[]),
             r"evasion\[0\]: bounds=\[\] is not allowed: expected a pair \(lo, hi\)"),
    validate("bounds: 0 (a number)", evasion(norm="linf", eps=[0.1], bounds=0),
             r"evasion\[0\]: bounds=0 is not allowed: expected a pair \(lo, hi\)"),
    validate("the same eps twice", evasion(norm="linf", eps=[0.1, 0.1]),
             r"threat_model\.evasion lists one norm/eps twice"),
    validate("evasion threats without attacks", suite(attacks=...),
             r"attacks is missing: evasion threats need at least one attack"),
    validate("attacks without evasion threats", threats(evasion=...),
             r"threat_model\.evasion is missing: attacks need evasion threats"),
    # ------------------------------------------------------------------ attacks
    validate("an unknown attack (did you mean)", suite(attacks=["pgdd"]),
             r"attacks\[0\]: attack='pgdd' is not known.*did you mean 'pgd'"),
    validate("pgd steps: 0", suite(attacks=[{"name": "pgd", "steps": 0}]),
             r"attacks\[0\]: steps=0 is not allowed: expected a value in \[1, inf\)"),
    validate("pgd steps: '10' (a string)", suite(attacks=[{"name": "pgd", "steps": "10"}]),
             r"attacks\[0\]: steps='10' is not allowed: expected an integer"),
    validate("pgd steps: true", suite(attacks=[{"name": "pgd", "steps": True}]),
             r"attacks\[0\]: steps=True is not allowed: expected an integer"),
    validate("pgd loss: foo", suite(attacks=[{"name": "pgd", "loss": "foo"}]),
             r"attacks\[0\]: loss='foo' is not allowed: expected one of ce, margin, dlr"),
    validate("pgd early_stop: 1 (not a bool)", suite(attacks=[{"name": "pgd",
                                                               "early_stop": 1}]),
             r"attacks\[0\]: early_stop=1 is not allowed: expected true or false"),
    validate("an unknown attack parameter", suite(attacks=[{"name": "pgd", "stpes": 10}]),
             r"attack 'pgd' got unknown parameter 'stpes'.*did you mean 'steps'"),
    validate("an untargeted-only attack on a targeted threat", threats(evasion=[
        {"norm": "linf", "eps": [0.1], "targeted": True}]) | {"attacks": ["pgd", "square"]},
        r"attacks\[1\].*for square.*untargeted only"),
    validate("transfer with an unknown inner attack", suite(attacks=[
        {"name": "transfer", "attack": "pgdd"}]), r"attacks\[0\]: attack='pgdd' is not known"),
    validate("transfer of a transfer attack", suite(attacks=[{"name": "transfer",
                                                              "attack": "transfer"}]),
             r"attacks\[0\]: attack='transfer' is not allowed: expected a white-box attack"),
    validate("transfer surrogate: a string", suite(attacks=[{"name": "transfer",
                                                             "surrogate": "none"}]),
             r"attacks\[0\]: surrogate='none' is not allowed: expected a trained nn\.Module or "
             r"a mapping"),
    validate("transfer surrogate with an unknown key (defence)", suite(attacks=[
        {"name": "transfer", "surrogate": {"defence": "none"}}]),
        r"attacks\[0\].*unknown key 'defence'.*did you mean 'defense'"),
    validate("transfer surrogate with an unknown model", suite(attacks=[
        {"name": "transfer", "surrogate": {"model": "mlpp"}}]),
        r"attacks\[0\]: model='mlpp' is not known.*did you mean 'mlp'"),
    validate("transfer surrogate seed: -1", suite(attacks=[
        {"name": "transfer", "surrogate": {"seed": -1}}]),
        r"attacks\[0\]: surrogate\.seed=-1 is not allowed"),
    validate("a foolbox l2 attack on a linf threat", suite(attacks=["foolbox:L2PGD"]),
             r"attacks\[0\]: threat='linf eps=0\.05' is not allowed for foolbox:L2PGD.*did "
             r"you mean 'foolbox:LinfPGD'"),
    validate("a foolbox attack that does not exist", suite(attacks=["foolbox:Nope"]),
             r"attacks\[0\]: attack='foolbox:Nope' is not known: expected foolbox:<Attack> "
             r"with one of"),
    validate("an ART attack misspelled", suite(attacks=["art:ProjectedGradientDecent"]),
             r"did you mean 'art:ProjectedGradientDescent'"),
    validate("an adapter prefix misspelled (fooblox:)", suite(attacks=["fooblox:LinfPGD"]),
             r"attack='fooblox:LinfPGD' is not known.*did you mean 'foolbox:LinfPGD'"),
    validate("an unknown foolbox attack parameter", suite(attacks=[
        {"name": "foolbox:LinfPGD", "stepz": 3}]),
        r"foolbox:LinfPGD got unknown parameter 'stepz'.*did you mean 'steps'"),
    validate("the same attack twice", suite(attacks=["fgsm", "fgsm"]),
             r"attacks\[1\]=fgsm is listed twice"),
    # ------------------------------------------------------------------ seeds
    validate("no seeds", suite(seeds=...), r"seeds is missing: expected a non-empty list"),
    validate("seeds: [] (empty)", suite(seeds=[]), r"seeds=\[\] is not allowed"),
    validate("seeds: 0 (not a list)", suite(seeds=0), r"seeds=0 is not allowed: expected a "
             r"non-empty list"),
    validate("seed: -1", suite(seeds=[-1]), r"seeds\[0\]: seed=-1 is not allowed"),
    validate("seed: 1.5", suite(seeds=[1.5]), r"seeds\[0\]: seed=1\.5 is not allowed: "
             r"expected an integer"),
    validate("seed: true", suite(seeds=[True]), r"seeds\[0\]: seed=True is not allowed"),
    validate("seed: '0' (a string)", suite(seeds=["0"]), r"seeds\[0\]: seed='0' is not "
             r"allowed: expected an integer"),
    validate("seed: 2**32 (beyond 32 bits)", suite(seeds=[2**32]),
             r"seeds\[0\]: seed=4294967296 is not allowed: expected an integer in "
             r"\[0, 2\*\*32 - 1\]"),
    validate("the same seed twice", suite(seeds=[0, 0]), r"seeds\[1\]=0 is listed twice"),
    # ------------------------------------------------------------------ metrics and settings
    validate("an unknown metric group (did you mean)", suite(metrics=["calibraton"]),
             r"metrics\[0\]='calibraton' is not known.*did you mean 'calibration'"),
    validate("metrics: [] (empty)", suite(metrics=[]), r"metrics=\[\] is not allowed: expected "
             r"a non-empty list"),
    validate("metrics: a string", suite(metrics="accuracy"),
             r"metrics='accuracy' is not allowed: expected a non-empty list"),
    validate("the same metric group twice", suite(metrics=["accuracy", "accuracy"]),
             r"metrics\[1\]='accuracy' is listed twice"),
    validate("offmanifold n_noise: 5", suite(offmanifold={"n_noise": 5}),
             r"offmanifold: n_noise=5 is not allowed: expected a value in \[10, inf\)"),
    validate("offmanifold n_noise: 10**12", suite(offmanifold={"n_noise": 10**12}),
             r"offmanifold: n_noise=1000000000000 is not allowed: expected an integer in "
             r"\[10, 100000\]"),
    validate("an unknown offmanifold key", suite(offmanifold={"n_nois": 100}),
             r"offmanifold=\{'n_nois': 100\} is not allowed: expected \{n_noise: int\}"),
    validate("offmanifold: [] (not a mapping)", suite(offmanifold=[]),
             r"offmanifold=\[\] is not allowed"),
    validate("information classes: [0] (one class)", suite(information={"classes": [0]}),
             r"information: classes=\[0\] is not allowed: expected two class ids"),
    validate("information classes: [1, 1]", suite(information={"classes": [1, 1]}),
             r"information: classes=\[1, 1\] is not allowed: expected two different class ids"),
    validate("information n_examples: 0", suite(information={"n_examples": 0}),
             r"information: n_examples=0 is not allowed"),
    validate("information noise: .nan", BASE_YAML + "information: {noise: .nan}\n",
             r"information: noise=nan is not allowed: expected a finite number"),
    validate("an unknown information key", suite(information={"clases": [0, 1]}),
             r"information=\{'clases': \[0, 1\]\} is not allowed: expected \{classes"),
    validate("checks: a list", suite(checks=[1]), r"checks=\[1\] is not allowed: expected a "
             r"mapping"),
    validate("checks n_probe: 0", suite(checks={"n_probe": 0}),
             r"checks: n_probe=0 is not allowed"),
    validate("an unknown sanity check", suite(checks={"enabled": ["gradient_norm"]}),
             r"checks: enabled\[0\]='gradient_norm' is not known.*did you mean "
             r"'gradient_norms'"),
    validate("an unknown checks key", suite(checks={"nprobe": 3}),
             r"checks: unknown key 'nprobe'.*did you mean 'n_probe'"),
    # ------------------------------------------------------------------ batch_size
    validate("batch_size: 0", suite(batch_size=0),
             r"batch_size=0 is not allowed: expected a value in \[1, inf\)"),
    validate("batch_size: -8", suite(batch_size=-8),
             r"batch_size=-8 is not allowed: expected a value in \[1, inf\)"),
    validate("batch_size: 2.5", suite(batch_size=2.5),
             r"batch_size=2\.5 is not allowed: expected an integer"),
    validate("batch_size: '64' (a string)", suite(batch_size="64"),
             r"batch_size='64' is not allowed: expected an integer"),
    validate("batch_size: true", suite(batch_size=True),
             r"batch_size=True is not allowed: expected an integer"),
    validate("batch_size: null", BASE_YAML + "batch_size: null\n",
             r"batch_size=None is not allowed: expected an integer >= 1"),
    validate("an attack's batch_size: 0", suite(attacks=[{"name": "pgd", "batch_size": 0}]),
             r"attacks\[0\]: batch_size=0 is not allowed: expected a value in \[1, inf\)"),
    validate("an attack's batch_size: 'all'",
             suite(attacks=["fgsm", {"name": "pgd", "batch_size": "all"}]),
             r"attacks\[1\]: batch_size='all' is not allowed: expected an integer"),
    validate("one attack twice, once with a batch_size",
             suite(attacks=["pgd", {"name": "pgd", "batch_size": 8}]),
             r"attacks\[1\]=pgd is listed twice: expected distinct entries"),
    # ------------------------------------------------------------------ tolerances
    validate("tolerances: a list", suite(tolerances=[1]),
             r"tolerances=\[1\] is not allowed: expected a mapping"),
    validate("a tolerance for an unknown metric", suite(tolerances={"ecee": {"floor": 0.1}}),
             r"tolerances: metric='ecee' is not known.*did you mean 'ece'"),
    validate("a tolerance floor: -1", suite(tolerances={"ece": {"floor": -1}}),
             r"tolerances\.ece\.floor=-1 is not allowed: expected a number >= 0"),
    validate("a tolerance k: .nan", BASE_YAML + "tolerances: {ece: {k: .nan}}\n",
             r"tolerances\.ece\.k=nan is not allowed: expected a number > 0"),
    validate("a tolerance floor: true", suite(tolerances={"ece": {"floor": True}}),
             r"tolerances\.ece\.floor=True is not allowed"),
    validate("an unknown tolerance field", suite(tolerances={"ece": {"flor": 0.1}}),
             r"tolerances\.ece: unknown field 'flor'.*did you mean 'floor'"),
    validate("tolerance together with floor", suite(tolerances={
        "ece": {"tolerance": 0.1, "floor": 0.1}}),
        r"tolerances\.ece: tolerance together with floor is not allowed"),
    api("a tolerance for an unknown metric", suite(tolerances={"ecee": {"floor": 0.1}}),
        r"tolerances: metric='ecee' is not known"),
    # ------------------------------------------------------------------ expectations
    validate("expectations: a string", suite(expectations="ece of a below b"),
             r"expectations='ece of a below b' is not allowed: expected a list of claims"),
    validate("a claim without below/above (did you mean)", suite(
        expectations=["ece of label_smoothing bellow none"]),
        r"expectations\[0\]='ece of label_smoothing bellow none' is not allowed: no 'below' "
        r"or 'above' \(did you mean 'below'\?\)"),
    validate("a claim about an unknown metric", suite(
        expectations=["ecee of label_smoothing below none"]),
        r"expectations\[0\]\.metric='ecee' is not known"),
    validate("a claim about an unknown defense", suite(
        expectations=["ece of label_smothing below none"]),
        r"expectations\[0\]\.defense='label_smothing' is not known.*did you mean "
        r"'label_smoothing'"),
    validate("a claim comparing a defense with itself", suite(
        expectations=["ece of none below none"]),
        r"expectations\[0\]: defense='none' is compared with itself"),
    validate("the same claim twice", suite(
        expectations=["ece of label_smoothing below none"] * 2),
        r"expectations\[1\] repeats expectations\[0\]"),
    validate("two claims that contradict", suite(expectations=[
        "ece of label_smoothing below none", "ece of label_smoothing above none"]),
        r"expectations\[1\] contradicts expectations\[0\]"),
    validate("a claim with unbalanced brackets", suite(
        expectations=["ece of label_smoothing(eps=0.1 below none"]),
        r"expectations\[0\]=.* is not allowed: unbalanced brackets"),
    validate("a structured claim with margin: -1", suite(expectations=[
        {"metric": "ece", "defense": "label_smoothing", "below": "none", "margin": -1}]),
        r"expectations\[0\]\.margin=-1 is not allowed: expected a number >= 0"),
    validate("a structured claim with required: 'yes'", suite(expectations=[
        {"claim": "ece of label_smoothing below none", "required": "yes"}]),
        r"expectations\[0\]\.required='yes' is not allowed: expected true or false"),
    validate("a claim at a threat the suite does not have", suite(expectations=[
        {"metric": "robust_accuracy", "defense": "label_smoothing", "above": "none",
         "threat": "linf eps=9"}]),
        r"expectations\[0\]\.threat='linf eps=9' is not known.*did you mean"),
    validate("an unknown key in a structured claim", suite(expectations=[
        {"claim": "ece of label_smoothing below none", "requierd": True}]),
        r"expectations\[0\]: unknown key 'requierd'"),
    # ------------------------------------------------------------------ through run
    run("an unknown defense", suite(defenses=["none", "label_smothing"]),
        r"defenses\[1\].*did you mean 'label_smoothing'"),
    run("evasion eps: .nan", BASE_YAML.replace("- 0.05", "- .nan"),
        r"evasion\[0\]: eps=nan is not allowed"),
    run("a key given twice", BASE_YAML + "seeds: [5]\n", r"key 'seeds' is given twice"),
    # ------------------------------------------------------------------ parse_suite
    api("a Python tuple key in a parameter", suite(datasets=[{"name": "blobs", ("a",): 1}]),
        r"datasets\[0\]: key \('a',\) is not allowed: expected a string key", SuiteError),
    api("a mapping with mixed key types as a parameter value", suite(
        defenses=[{"name": "label_smoothing", "eps": {1: 2, "a": 3}}]),
        r"defenses\[0\]\.eps: key 1 is not allowed: expected a string key", SuiteError),
    api("training: {0: null} (found by hypothesis)", suite(training={0: None}),
        r"training: key 0 is not allowed: expected a string key", SuiteError),
    api("a null key in a parameter (found by hypothesis)", suite(
        datasets=[{"name": "blobs", "n_samples": {"": None, None: 1}}]),
        r"datasets\[0\]\.n_samples: key None is not allowed: expected a string key", SuiteError),
    api("None instead of a suite mapping (found by hypothesis)", None,  # type: ignore[arg-type]
        r"suite=None is not allowed: expected a mapping of suite keys", SuiteError),
    api("a date as a parameter (found by hypothesis)", suite(
        datasets=[{"name": "blobs", "n_samples": datetime.date(2000, 1, 1)}]),
        r"datasets\[0\]\.n_samples=datetime\.date\(2000, 1, 1\) is not allowed", SuiteError),
    api("a set as a parameter value", suite(datasets=[{"name": "blobs", "n_samples": {1, 2}}]),
        r"datasets\[0\]\.n_samples=\{1, 2\} is not allowed.*not a set", SuiteError),
    api("a suite nested 40 levels deep", suite(description=[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
        [[[[[["deep"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]),
        r"description(\[0\])+ is nested more than 32 levels deep", SuiteError),
]
