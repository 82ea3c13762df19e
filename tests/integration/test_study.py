"""The label-smoothing study at CI size: the full study's suites reduced programmatically
(benchmarks/study/label_smoothing.py, ``--reduced``: digits only, 2 seeds, 10 epochs, only
the flip rates a claim names), run and rendered by the same driver and generator as
`make study`, into a temporary folder.

The page must carry every declared claim with a verdict, show the numbers of results.json,
say that it is generated and from which results, and judge each claim exactly as
poisonlab.harness.expectations does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from benchmarks.study import label_smoothing as study
from poisonlab.harness.expectations import (
    Expectation,
    ExpectationVerdict,
    evaluate_expectations,
    overall,
    z_se,
)

pytestmark = pytest.mark.slow


@dataclass
class Run:
    out: Path
    doc: Path
    text: str
    parts: list[study.PartResults]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("study")
    out, doc = root / "runs", root / "page.md"
    argv = ["--reduced", "--out", str(out), "--doc", str(doc), "--workers", "2", "--quiet",
            "--no-reports"]
    assert study.main(argv) == 0
    return Run(out, doc, doc.read_text(), study.load_parts(out))


# --------------------------------------------------------------------------- helpers


def claim_rows(text: str) -> list[dict[str, str]]:
    """Every row of the page's claim tables, as {column: cell}."""
    rows: list[dict[str, str]] = []
    head: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            head = None
            continue
        if line.startswith("|---"):
            continue
        cells = [c.strip() for c in line[2:-2].split(" | ")]
        if head is None:
            head = (cells if cells[:2] == ["claim", "dataset"] and "the literature" in cells
                    else [])
        elif head and len(cells) == len(head):
            rows.append(dict(zip(head, cells, strict=True)))
    return rows


def row_for(rows: list[dict[str, str]], part: study.PartResults, claim: str,
            dataset: str) -> dict[str, str]:
    found = [r for r in rows if r["claim"] == f"`{claim}`" and r["dataset"] == dataset
             and r.get("setting", study.info_setting(part)) == study.info_setting(part)]
    assert len(found) == 1, (claim, dataset, len(found))
    return found[0]


NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def numbers(cell: str) -> list[str]:
    return NUMBER.findall(cell)


def close(shown: str, value: float) -> bool:
    """``shown`` is ``value`` rounded to the decimals it shows."""
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    return abs(float(shown) - value) <= 0.5 * 10 ** -decimals + 1e-9


def verdict_of(cell: str) -> str:
    m = re.match(r"\*\*(holds|does not hold|inconclusive)\*\*", cell)
    assert m, cell
    return m.group(1)


def stored_results(part: study.PartResults) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(e, r) for e in part.doc["expectations"] for r in e["results"]]


# --------------------------------------------------------------------------- tests


def test_the_reduced_grid_is_the_full_suites_reduced(run: Run) -> None:
    full = study.load_study()
    reduced = study.load_study(reduction=study.CI_REDUCTION)
    assert [p.key for p in full] == [p.key for p in reduced] == [p.key for p in run.parts]
    assert len(full) >= 5
    fewer_rates = False
    for f, r, res in zip(full, reduced, run.parts, strict=True):
        fs, rs = f.suite, r.suite
        # What the claims are about is untouched.
        for name in ("defenses", "models", "attacks", "evasion", "metrics", "information",
                     "name"):
            assert getattr(rs, name) == getattr(fs, name), (f.key, name)
        assert getattr(rs, "checks", None) == getattr(fs, "checks", None)
        # The grid is smaller.
        assert [d.label for d in rs.datasets] == ["digits"]
        assert rs.seeds == fs.seeds[:2] and len(rs.seeds) >= 2
        assert rs.training.epochs == min(fs.training.epochs, 10)
        assert (rs.training.batch_size, rs.training.lr) == (fs.training.batch_size,
                                                           fs.training.lr)
        assert set(rs.poisoning) <= set(fs.poisoning)
        assert {e.poisoning for e in rs.expectations} - {"none"} <= {p.id for p in rs.poisoning}
        fewer_rates |= len(rs.poisoning) < len(fs.poisoning)
        assert rs.expectations == tuple(e for e in fs.expectations
                                        if e.dataset in (None, "digits"))
        # The run is that reduced suite, and each cell kept its full-suite definition.
        assert res.config == json.loads(json.dumps(rs.to_dict()))
        full_cells = {json.dumps(c.to_dict(), sort_keys=True) for c in fs.cells()}
        assert all(json.dumps(c.to_dict(), sort_keys=True) in full_cells for c in rs.cells())
    assert fewer_rates


def test_every_declared_claim_appears_with_a_verdict(run: Run) -> None:
    rows = claim_rows(run.text)
    suites = {p.key: p.suite for p in study.load_study(reduction=study.CI_REDUCTION)}
    declared = 0
    for part in run.parts:
        stored = [Expectation.from_dict(e).to_dict()
                  for e in part.doc.get("expectations") or []]
        assert stored == [e.to_dict() for e in suites[part.key].expectations]
        for e, r in stored_results(part):
            declared += 1
            row = row_for(rows, part, e["claim"], r["dataset"])
            assert verdict_of(row["verdict"]) in study.VERDICTS
    assert declared == len(rows) > 40


def test_numbers_on_the_page_equal_those_in_results_json(run: Run) -> None:
    rows = claim_rows(run.text)
    z = z_se()
    checked = 0
    for part in run.parts:
        for e, r in stored_results(part):
            row = row_for(rows, part, e["claim"], r["dataset"])
            a, b = numbers(row["a vs b (means)"])
            assert close(a, r["a_mean"]) and close(b, r["b_mean"]), row
            diff, band = numbers(row["effect: a − b ± 2 SE"])
            assert close(diff, r["diff"]) and close(band, z * r["se"]), row
            assert row["n (a, b)"] == f"{r['a_n']}, {r['b_n']}"
            checked += 1
    assert checked > 40
    # The aggregate tables too: the first data row of the label-flip table.
    noise = next(p for p in run.parts if p.poisonings)
    q = noise.poisonings[0]
    agg = noise.agg("digits", "none", "accuracy_drop", poisoning=q["id"], threat=q["id"])
    assert agg is not None
    line = next(ln for ln in run.text.splitlines() if ln.startswith(f"| digits | {q['id']} |"))
    mean, std = numbers(line.split(" | ")[2])
    assert close(mean, agg["mean"]) and close(std, agg["std"])


def test_verdicts_follow_the_expectations_module(run: Run) -> None:
    rows = claim_rows(run.text)
    z = z_se()
    seen = set()
    for part in run.parts:
        judged = evaluate_expectations(part.doc)
        stored = stored_results(part)
        assert len(judged) == len(stored)
        for j, (e, r) in zip(judged, stored, strict=True):
            page = verdict_of(row_for(rows, part, e["claim"], r["dataset"])["verdict"])
            assert page == j.verdict.value == r["verdict"]
            # The rule itself: claimed = sign * diff against margin +- z * se.
            sign = 1 if e["relation"] == "above" else -1
            claimed = sign * r["diff"]
            if r["a_n"] < 2 or r["b_n"] < 2:
                rule = "inconclusive"
            elif claimed > e["margin"] + z * r["se"]:
                rule = "holds"
            elif claimed < e["margin"] - z * r["se"]:
                rule = "does not hold"
            else:
                rule = "inconclusive"
            assert page == rule, (e["claim"], r)
            seen.add(page)
        # One verdict over scopes, as stored.
        for e in part.doc["expectations"]:
            mine = [j for j in judged if j.expectation.text == e["claim"]]
            assert overall(mine).value == e["verdict"]
    assert seen <= {v.value for v in ExpectationVerdict}
    assert len(seen) >= 2  # the reduced grid is not all one verdict


def test_the_page_says_it_is_generated_and_from_which_results(run: Run) -> None:
    head = "\n".join(run.text.splitlines()[:12])
    assert "GENERATED FILE" in head and "generated, never edited by hand" in head
    assert "--reduced" in head
    for part in run.parts:
        assert str(part.path) in head
        assert part.doc["created"] in head
    assert "This is the reduced CI grid" in run.text
    assert "Claims that do not hold for these small models" in run.text
    for key in study.REFERENCES:
        assert f'<a id="{key}"></a>' in run.text
    figures = run.doc.with_suffix("")
    linked = re.findall(r"!\[[^]]*\]\(([^)]+)\)", run.text)
    assert linked, "no figure linked"
    for rel in linked:
        png = run.doc.parent / rel
        assert png.is_file() and png.parent == figures
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_page_is_a_function_of_the_results(run: Run, tmp_path: Path) -> None:
    again = tmp_path / "again.md"
    assert study.main(["--no-run", "--out", str(run.out), "--doc", str(again)]) == 0

    def body(text: str) -> list[str]:  # the command line and figure folder differ
        return [ln for ln in text.splitlines()
                if "benchmarks.study.label_smoothing" not in ln and "![" not in ln]

    assert body(again.read_text()) == body(run.text)


def test_a_missing_run_folder_is_one_clear_error(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert study.main(["--no-run", "--out", str(tmp_path), "--doc",
                       str(tmp_path / "x.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run the study first" in err
    assert not (tmp_path / "x.md").exists()
