"""The measured tables of docs/certified.md: clean accuracy and certified radii of partition
aggregation (DPA and Finite Aggregation) for several k, features and spreads d.

    python -m benchmarks.study.certified            # mnist5k and digits, prints Markdown
    python -m benchmarks.study.certified --quick    # digits only (seconds)

Every row is one seed (0) of one configuration; the split is load_dataset(name, seed=0).
"Median radius" is the largest number of flipped training labels against which at least
half the test points are certified correct (DPA's median certified robustness).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import poisonlab as pl

#: (dataset, features, n_components, patch, k, d)
GRID: tuple[tuple[str, str, int, int, int, int], ...] = (
    ("mnist5k", "pca", 30, 6, 50, 1),
    ("mnist5k", "patch_kmeans", 64, 6, 25, 1),
    ("mnist5k", "patch_kmeans", 64, 6, 50, 1),
    ("mnist5k", "patch_kmeans", 64, 6, 100, 1),
    ("mnist5k", "patch_kmeans", 64, 6, 25, 4),
    ("mnist5k", "patch_kmeans", 64, 6, 50, 4),
    ("digits", "pca", 20, 3, 10, 1),
    ("digits", "pca", 20, 3, 25, 1),
    ("digits", "pca", 20, 3, 50, 1),
    ("digits", "pca", 20, 3, 25, 4),
    ("digits", "patch_kmeans", 32, 3, 25, 1),
)


def measure(dataset: str, features: str, n_components: int, patch: int, k: int,
            d: int) -> dict[str, Any]:
    """Train the ensemble (seed 0) and certify the test split."""
    ds = pl.load_dataset(dataset, seed=0)
    defense = pl.get_defense("dpa", k=k, d=d, features=features,
                             n_components=n_components, patch=patch)
    t0 = time.perf_counter()
    model = pl.train(pl.build_model("logistic", ds.input_shape, ds.n_classes, seed=0),
                     ds.x_train, ds.y_train, defense=defense, seed=0)
    cert = pl.certify(model, ds.x_test)
    n = len(ds.x_train)
    med = cert.median_radius(ds.y_test)
    return {
        "dataset": dataset, "n_train": n, "features": f"{features}-{n_components}",
        "k": k, "d": d,
        "accuracy": float((cert.prediction == ds.y_test).to(torch.float64).mean()),
        "median": med, "median_pct": 100 * med / n,
        "at_0.5%": cert.certified_accuracy(0.005, ds.y_test),
        "at_1%": cert.certified_accuracy(0.01, ds.y_test),
        "seconds": time.perf_counter() - t0,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| data set (train) | features | k | d | clean accuracy | median radius | "
            "certified acc. at 0.5% | at 1% | time |")
    out = [head, "|" + "---|" * 9]
    for r in rows:
        out.append(f"| {r['dataset']} ({r['n_train']}) | {r['features']} | {r['k']} | "
                   f"{r['d']} | {r['accuracy']:.3f} | {r['median']} "
                   f"({r['median_pct']:.2f}%) | {r['at_0.5%']:.3f} | {r['at_1%']:.3f} | "
                   f"{r['seconds']:.0f} s |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="digits only")
    args = ap.parse_args(argv)
    grid = [g for g in GRID if not args.quick or g[0] == "digits"]
    print(markdown([measure(*g) for g in grid]))


if __name__ == "__main__":
    main()
