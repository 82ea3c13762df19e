"""``evaluate_pretrained`` / ``poisonlab evaluate`` arguments, and the threat enums."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from poisonlab import build_model
from poisonlab.errors import ConfigError
from poisonlab.harness.pretrained import evaluate_pretrained
from poisonlab.threat import FlipStrategy, Knowledge, Norm

from .harness import Case, cli_case


def _weights(tmp: Path) -> Path:
    torch.save(build_model("mlp", (64,), 10, seed=0).state_dict(), tmp / "w.pt")
    return tmp / "w.pt"


def _api(**kw: Any) -> Callable[[Path], object]:
    return lambda tmp: evaluate_pretrained("mlp", _weights(tmp), "digits", tmp / "out", **kw)


def _cli(*flags: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["evaluate", "--model", "mlp", "--weights", str(_weights(tmp)),
                        "--data", "digits", "--out", str(tmp / "out"), *flags]


CASES = [
    Case("api", "evaluate_pretrained with an eps listed twice", _api(eps=[0.1, 0.1]),
         ConfigError, r"eps\[1\]=0\.1 is listed twice: expected distinct budgets"),
    Case("api", "evaluate_pretrained with an attack listed twice",
         _api(eps=[0.1], attacks=["fgsm", "fgsm"]), ConfigError,
         r"attacks\[1\]='fgsm' is listed twice"),
    Case("api", "evaluate_pretrained with eps=0.1 (not a list)", _api(eps=0.1), ConfigError,
         r"eps=0\.1 is not allowed: expected a list of budgets"),
    Case("api", "evaluate_pretrained with attacks='pgd' (not a list)", _api(attacks="pgd"),
         ConfigError, r"attacks='pgd' is not allowed: expected a list of attacks"),
    Case("api", "evaluate_pretrained with a 33-bit seed", _api(seed=2**32), ConfigError,
         r"seed=4294967296 is not allowed: expected an integer in \[0, 2\*\*32 - 1\]"),
    Case("api", "evaluate_pretrained with n_noise=10**9", _api(n_noise=10**9), ConfigError,
         r"n_noise=1000000000 is not allowed: expected an integer in \[10, 100000\]"),
    Case("api", "evaluate_pretrained with batch_size=0", _api(batch_size=0), ConfigError,
         r"batch_size=0 is not allowed: expected a value in \[1, inf\)"),
    Case("api", "evaluate_pretrained with an attack's batch_size=0",
         _api(eps=[0.1], attacks=[{"name": "fgsm", "batch_size": 0}]), ConfigError,
         r"batch_size=0 is not allowed: expected a value in \[1, inf\)"),
    Case("api", "evaluate_pretrained with an attack twice, once with a batch_size",
         _api(eps=[0.1], attacks=["fgsm", {"name": "fgsm", "batch_size": 8}]), ConfigError,
         r"attacks\[1\]='fgsm' is listed twice"),
    cli_case("cli", "evaluate --model-param without =", _cli("--model-param", "hidden"),
             r"--model-param 'hidden' is not allowed: expected KEY=VALUE"),
    cli_case("cli", "evaluate --model-param given twice",
             _cli("--model-param", "hidden=[8]", "--model-param", "hidden=[9]"),
             r"--model-param 'hidden' is given twice: expected each parameter once"),
    cli_case("cli", "evaluate --model-param with a bad YAML value",
             _cli("--model-param", "hidden=[8"),
             r"--model-param 'hidden=\[8': VALUE is not YAML"),
    cli_case("cli", "evaluate --model-param of an unknown parameter",
             _cli("--model-param", "hiden=[8]"),
             r"hiden.*did you mean 'hidden'"),
    Case("api", "evaluate_pretrained with model_params=[1]", _api(model_params=[1]),
         ConfigError, r"model_params=\[1\] is not allowed: expected a mapping"),
    cli_case("cli", "evaluate --eps 0.1 0.1", _cli("--eps", "0.1", "0.1"),
             r"eps\[1\]=0\.1 is listed twice"),
    cli_case("cli", "evaluate --attacks fgsm fgsm", _cli("--eps", "0.1", "--attacks", "fgsm",
                                                        "fgsm"),
             r"attacks\[1\]='fgsm' is listed twice"),
    Case("api", "Norm('l3')", lambda tmp: Norm("l3"), ConfigError,
         r"norm='l3' is not allowed: expected one of linf, l2"),
    Case("api", "FlipStrategy('pairwize')", lambda tmp: FlipStrategy("pairwize"), ConfigError,
         r"strategy='pairwize' is not allowed: .*did you mean 'pairwise'"),
    Case("api", "Knowledge('grey-box')", lambda tmp: Knowledge("grey-box"), ConfigError,
         r"knowledge='grey-box' is not allowed: expected one of white-box, transfer, "
         r"black-box"),
]
