"""The shipped quickstart suite: valid, and reproducible to the byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poisonlab.cli import main
from poisonlab.harness import load_suite

from .test_cli import stable

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "benchmarks" / "suites" / "quickstart.yaml"


def test_quickstart_declares_what_the_demo_promises():
    s = load_suite(QUICKSTART)
    assert [d.name for d in s.datasets] == ["digits"] and [m.name for m in s.models] == ["mlp"]
    assert [d.label for d in s.defenses] == [
        "none", "flip_augment(alpha=0.1)", "label_smoothing(eps=0.1)",
        "confidence_penalty(beta=1.0)",
    ]
    assert [p.id for p in s.poisoning] == ["random 0.2", "pairwise 3->8 0.1"]
    assert [a.name for a in s.attacks] == ["fgsm", "pgd", "pgd"]
    assert [a.kwargs.get("loss", "ce") for a in s.attacks[1:]] == ["ce", "margin"]
    assert s.evasion[0].eps == (0.05, 0.1, 0.2) and s.evasion[0].norm.value == "linf"
    assert s.seeds == (0, 1, 2)
    assert sum(1 for _ in s.cells()) == 36


@pytest.mark.slow
def test_quickstart_twice_gives_identical_numbers(tmp_path: Path, quickstart_run: Path):
    docs = [json.loads((quickstart_run / "results.json").read_text())]
    assert main(["run", str(QUICKSTART), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    docs.append(json.loads((tmp_path / "b" / "results.json").read_text()))
    assert docs[0]["n_failed"] == 0
    assert stable(docs[0]) == stable(docs[1])
    # The headline claims of the demo hold on every seed: the model learns digits, and a
    # pairwise flip of 10% of the labels moves (nearly) the whole source class.
    accs = [m["value"] for c in docs[0]["cells"] if c["poisoning"] is None
            for m in c["metrics"] if m["metric"] == "clean_accuracy"]
    assert min(accs) > 0.9
    asr = [a["mean"] for a in docs[0]["aggregates"] if a["metric"] == "poisoning_success_rate"
           and a["poisoning"].startswith("pairwise")]
    assert min(asr) > 0.8


@pytest.mark.slow
def test_the_quickstart_report_opens_with_a_verdict_per_threat_model(quickstart_run: Path):
    md = (quickstart_run / "report.md").read_text()
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Verdicts by threat model", sections
    verdicts = md.split("## Verdicts by threat model")[1].split("\n## ")[0]
    titles = [line[4:] for line in verdicts.splitlines() if line.startswith("### ")]
    # each poisoning, each eps, each poisoning combined with the middle eps
    assert titles == ["label flips random 0.2", "label flips pairwise 3->8 0.1",
                      "evasion linf eps=0.05", "evasion linf eps=0.1", "evasion linf eps=0.2",
                      "label flips random 0.2, then evasion linf eps=0.1",
                      "label flips pairwise 3->8 0.1, then evasion linf eps=0.1"]
    sentences = [line for line in verdicts.splitlines() if line.startswith("Under **")]
    assert len(sentences) == len(titles)
    assert all("ranks first" in s and "95% CI" in s and "`none`" in s for s in sentences)
    assert "| rank | defense | robust accuracy [95% CI] | clean accuracy (cost) |" in verdicts


README = ROOT / "README.md"


@pytest.mark.slow
def test_the_readme_sample_is_what_make_demo_prints(quickstart_run: Path):
    from poisonlab._text import text_table
    from poisonlab.harness.report import summary_rows

    doc = json.loads((quickstart_run / "results.json").read_text())
    printed = text_table(*summary_rows(doc))
    sample = README.read_text().split("## A sample of the report")[1]
    block = sample.split("```\n")[1].split("```")[0]
    assert block.rstrip("\n").splitlines() == [line.rstrip() for line in printed.splitlines()]
    # the numbers the prose quotes
    flipped = {m["value"] for c in doc["cells"] for m in c["metrics"]
               if m["metric"] == "n_flipped" and m["threat"] == "pairwise 3->8 0.1"}
    assert flipped == {117.0} and "relabels 117 of the 119" in sample
    clean = [a for a in doc["aggregates"] if a["poisoning"] == "none"]
    ece = {a["defense"]: a["mean"] for a in clean if a["metric"] == "ece"}
    assert f"(ECE {ece['confidence_penalty(beta=1.0)']:.2f})" in sample
    conf = {a["defense"]: a["mean"] for a in clean if a["metric"] == "offmanifold_confidence"}
    others = sorted(v for d, v in conf.items() if d != "none")
    assert f"({conf['none']:.2f} down to {others[0]:.2f}–{others[-1]:.2f})" in sample
