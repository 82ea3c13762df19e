"""Every ART and foolbox attack that ``poisonlab list attacks`` shows, on a tiny model.

Each listed ``art:<Class>`` and ``foolbox:<Class>`` either gives an AttackResult whose
points stay in the threat's ball and bounds, or fails with a one-line PoisonlabError that
names the attack, never a traceback from the library. Iteration counts are cut to a few
(the plumbing is under test, not the attack's strength): the class's own defaults are
what users get, with the same adapter code.
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from torch import nn

from poisonlab import AttackResult, EvasionThreat, PoisonlabError, get_attack
from poisonlab.attacks import attacks
from poisonlab.cli import main

pytestmark = pytest.mark.slow

#: Small values for the iteration-count parameters of the library classes.
QUICK: dict[str, int] = {
    "steps": 2, "max_iter": 2, "binary_search_steps": 2, "repeats": 1, "num_trial": 2,
    "max_eval": 20, "init_eval": 5, "nb_steps": 2, "n_steps": 2, "query_limit": 20,
    "max_inner_iter": 2, "nb_random_init": 1, "lr_num_decay": 1, "max_halving": 2,
    "max_doubling": 2, "nb_grads": 2, "first_steps": 2, "eps_iter": 2,
    "conjugate_sinkhorn_max_iter": 2, "projected_sinkhorn_max_iter": 2,
    "initial_gradient_eval_steps": 2, "max_gradient_eval_steps": 2, "num_boost_queries": 20,
}

SHAPE = (3, 16, 16)
N = 4


def _listed(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The adapter names ``poisonlab list attacks`` prints (indented under their prefix)."""
    assert main(["list", "attacks"]) == 0
    rows = capsys.readouterr().out.splitlines()
    return [r.split()[0] for r in rows
            if r.startswith("    ") and r.split()[0].startswith(("art:", "foolbox:"))]


def test_list_attacks_shows_every_adapter_class(capsys):
    names = _listed(capsys)
    want = [m for prefix in ("art", "foolbox") for m, _ in attacks.members(prefix)]
    assert names == want
    assert {"art:AutoAttack", "art:HopSkipJump", "art:CarliniL2Method", "art:DeepFool",
            "foolbox:LinfPGD", "foolbox:L2CarliniWagnerAttack"} <= set(names)


def _quick(name: str) -> dict[str, int]:
    from poisonlab.attacks.adapters.art import _art_class
    from poisonlab.attacks.adapters.foolbox import _foolbox_class

    prefix, _, cls_name = name.partition(":")
    cls = _art_class(cls_name) if prefix == "art" else _foolbox_class(cls_name)
    params = inspect.signature(cls).parameters
    return {k: v for k, v in QUICK.items() if k in params}


@pytest.fixture(scope="module")
def tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    model.eval()
    x = torch.rand((N, *SHAPE), generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _names() -> list[str]:
    return [m for prefix in ("art", "foolbox") for m, _ in attacks.members(prefix)]


@pytest.mark.parametrize("name", _names())
def test_adapter_gives_a_result_or_one_line(name, tiny):
    model, x, y = tiny
    norm = "l2" if "L2" in name or name in ("art:DeepFool", "art:CarliniL2Method") else "linf"
    # a budget that fools the tiny model easily: ensembles (art:AutoAttack) then stop early
    threat = EvasionThreat(eps=3.0 if norm == "l2" else 0.3, norm=norm)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attack = get_attack(name, **_quick(name))
            res = attack(model, x, y, threat=threat, seed=0, batch_size=2)
    except PoisonlabError as e:
        text = str(e)
        assert "\n" not in text, f"{name}: a multi-line error: {text!r}"
        assert name.partition(":")[2] in text or "threat" in text, (
            f"{name}: the error does not name the attack: {text!r}")
        return
    assert isinstance(res, AttackResult)
    assert res.success.shape == (N,) and res.x_adv is not None
    delta = (res.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((size <= threat.eps * (1 + 1e-5) + 1e-6).all()), name
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
