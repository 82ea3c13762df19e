"""docs/suite-reference.md, generated from the spec: every key a suite accepts, its type,
default and meaning, an example of each block, and every registered name with its
parameters.

The blocks' fields come from the dataclasses that parse them (``TrainSpec``,
``EvasionSpec``, ``PoisonThreat``, ``NamedThreat``, ``InformationSpec``,
``SanitySettings``: defaults from the fields, types and meaning from the numpy
docstrings), the names from the registries. ``tests/unit/test_suite_reference.py`` fails
when the file is stale or when a top-level key the parser accepts is not described here.

Regenerate: ``python -m poisonlab.harness.reference --write``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .._params import parameters
from .._text import markdown_table

PATH = Path(__file__).resolve().parents[2] / "docs" / "suite-reference.md"

#: The top-level keys, one per entry (an indented line continues it): key :: type ::
#: default :: meaning. parse_suite accepts exactly these (a test holds the two together).
_TOP_LEVEL_TEXT = """
name :: string :: (required) :: the suite's name; the gate refuses a baseline of another
version :: integer >= 1 :: (required) :: the suite's own version; bump it when a change should
    not be compared with older baselines
description :: string :: "" :: what the suite answers; heads the report
include :: path :: none :: another suite file (relative to this one) merged underneath this
    one's keys
datasets :: list of names or {name, ...params} :: (required) :: the data sets (see Datasets
    below)
models :: list of names or {name, ...params} :: (required) :: the architectures (see Models
    below); `module:factory` for your own
training :: mapping :: see Training :: how every model is trained
defenses :: list of names or {name, ...params} :: (required) :: the defenses compared (see
    Defenses below); include `none`, the baseline
threat_model :: mapping :: (required) :: poisoning, evasion and the named threats (see Threat
    model)
attacks :: list of names or {name, ...params, batch_size} :: [] :: the evasion attacks (see
    Attacks below); required with evasion threats
seeds :: list of integers :: (required) :: one cell per seed; 3 or more for intervals
metrics :: list of groups :: all :: accuracy, evasion, poisoning, offmanifold, calibration,
    information
offmanifold :: {n_noise: int} :: {n_noise: 1000} :: noise inputs of the off-manifold metrics (10
    .. 100000)
information :: mapping :: see Information :: the mutual-information metric
checks :: mapping :: see Sanity checks :: the evaluation's sanity checks (docs/checks.md)
certified :: {flips: [number, ...]} :: {flips: [0.005, 0.01, 0.02]} :: radii of the certified
    accuracy of `dpa` cells: flipped labels, or fractions of the training set; each
    poisoning's budget is added (docs/certified.md)
tolerances :: {metric: {tolerance|floor|rel_floor|k: number}} :: {} :: per-metric overrides of
    the regression gate (docs/regression.md)
expectations :: list of claims :: [] :: claims about directions between defenses, judged against
    seed noise (docs/regression.md)
batch_size :: integer >= 1 :: 256 :: test inputs per forward pass of the evaluation; memory and
    speed only, never a number (docs/batching.md)
"""
TOP_LEVEL: tuple[tuple[str, ...], ...] = tuple(
    tuple(part.strip() for part in entry.split(" :: "))
    for entry in _TOP_LEVEL_TEXT.strip().replace("\n    ", " ").splitlines())

EXAMPLE = """name: quickstart
version: 1
description: does label smoothing buy robustness?
datasets: [digits]
models: [{name: mlp, hidden: [128, 128]}]
training: {epochs: 30, batch_size: 64, lr: 0.001}
defenses: [none, {name: label_smoothing, eps: 0.1}]
threat_model:
  poisoning: [{strategy: random, rate: 0.2}]
  evasion: [{norm: linf, eps: [0.05, 0.1]}]
  threats:
    - {name: noisy labels, poisoning: random 0.2}
    - {name: white-box linf 0.1, evasion: linf eps=0.1}
    - {name: poison then evade, poisoning: random 0.2, evasion: linf eps=0.1}
attacks: [fgsm, {name: pgd, steps: 40}]
seeds: [0, 1, 2]
metrics: [accuracy, evasion, poisoning, calibration]
expectations:
  - ece of label_smoothing(eps=0.1) above none
batch_size: 256"""


def _field_table(cls: Any, first: str = "key") -> list[str]:
    return markdown_table([first, "default", "type", "meaning"],
                          [[f"`{p.name}`", f"`{p.default}`", _cell(p.type), _cell(p.doc)]
                           for p in parameters(cls)])


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("``", "`")


def _registry(title: str, reg: Any, note: str) -> list[str]:
    out = [f"## {title}", "", note, ""]
    for name in reg.names():
        out.append(f"### `{name}`")
        out += ["", _cell(reg.help(name)) or "(no description)", ""]
        if parameters(reg.get(name)):
            out += [*_field_table(reg.get(name), "parameter"), ""]
    namespaces = reg.namespaces()
    if namespaces:
        out += ["Namespaces (any member, its parameters are the library's own):", ""]
        out += [f"- `{ns}`: {_cell(text)}" for ns, text in namespaces.items()] + [""]
    return out


def suite_reference() -> str:
    """The whole of docs/suite-reference.md."""
    from ..attacks import attacks
    from ..data import datasets
    from ..defenses import defenses
    from ..models import models
    from ..sanity import SanitySettings
    from ..threat import NamedThreat, PoisonThreat
    from .spec import EvasionSpec, InformationSpec, TrainSpec

    out = ["# Suite reference", "",
           "<!-- generated by `python -m poisonlab.harness.reference --write` from the spec "
           "(the dataclasses that parse each block, the registries); "
           "tests/unit/test_suite_reference.py keeps it current -->", "",
           "A suite is a YAML file (`poisonlab run SUITE.yaml --out DIR`). Every key, its "
           "type and default; a name's parameters are those its registry entry takes "
           "(`poisonlab list attacks pgd` prints the same).", "",
           "```yaml", EXAMPLE, "```", "", "## Top-level keys", ""]
    out += markdown_table(["key", "type", "default", "meaning"],
                          [[f"`{k}`", _cell(t), _cell(d), _cell(m)] for k, t, d, m in TOP_LEVEL])
    out += ["", "## Training (`training:`)", "", *_field_table(TrainSpec), "",
            "## Threat model (`threat_model:`)", "",
            "`poisoning:` a list of label-flip threats (the clean cell, rate 0, always runs):",
            "", *_field_table(PoisonThreat), "",
            "`evasion:` a list of groups, each one norm over several eps:", "",
            *_field_table(EvasionSpec), "",
            "`threats:` the named attackers the report's verdicts compare defenses against "
            "(default: each poisoning, each untargeted evasion threat, and each poisoning "
            "combined with the middle eps); each names threat ids of the lists above "
            "(`random 0.2`, `linf eps=0.1`):", "", *_field_table(NamedThreat), "",
            "## Information (`information:`)", "", *_field_table(InformationSpec), "",
            "## Sanity checks (`checks:`)", "", *_field_table(SanitySettings), ""]
    out += _registry("Datasets", datasets, "`datasets:` entries: a name, or `{name: ..., "
                     "param: value}`; `module:function` for your own loader.")
    out += _registry("Models", models, "`models:` entries; `{name: module:factory, weights: "
                     "file}` for your own (called with input_shape=, n_classes=).")
    out += _registry("Defenses", defenses, "`defenses:` entries.")
    out += _registry("Attacks", attacks, "`attacks:` entries; any entry also takes "
                     "`batch_size:` (a call argument, not a setting).")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """``--write``: regenerate docs/suite-reference.md; otherwise print it."""
    text = suite_reference()
    if argv is None:
        argv = sys.argv[1:]
    if "--write" in argv:
        PATH.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
