"""Batch size changes memory and speed, never a number (see poisonlab/batching.py).

Across batch sizes {1, 7, 64, unbatched}: linf FGSM / PGD (random start, restarts,
targeted, early stop) and the security curve give bit-identical adversarial examples and
success flags at 7, 64 and unbatched, and at batch size 1 every count is the same and
x_adv agrees within float32 noise; l2 attacks agree within 1e-5. A torch Dataset gives
what its tensors give; keep_adv=False keeps the outcomes and drops x_adv; no forward pass
ever sees more than batch_size samples.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from poisonlab import FGSM, PGD, Dataset, EvasionThreat, build_model, security_curve, train
from poisonlab.attacks.evasion import Noise
from poisonlab.attacks.geometry import SampleRNG
from poisonlab.batching import DEFAULT_BATCH_SIZE, iter_slices
from poisonlab.errors import ConfigError, DataError

N = 150
EXACT = (7, 64, None)


@pytest.fixture(scope="module")
def digits_cnn(digits: Dataset) -> nn.Module:
    model = build_model("cnn", digits.input_shape, digits.n_classes, seed=0, channels=(4, 8))
    return train(model, digits.x_train, digits.y_train, epochs=2, seed=0)


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def model(request: pytest.FixtureRequest, digits_mlp: nn.Module,
          digits_cnn: nn.Module) -> nn.Module:
    return digits_mlp if request.param == "mlp" else digits_cnn


ATTACKS = {
    "fgsm": (FGSM(), False),
    "pgd": (PGD(steps=5), False),
    "pgd-restarts": (PGD(steps=4, restarts=3), False),
    "pgd-early-stop": (PGD(steps=6, restarts=2, early_stop=True), False),
    "pgd-margin-targeted": (PGD(steps=5, loss="margin"), True),
    "noise": (Noise(samples=3), False),
}


def _run(attack, model, digits, batch_size, *, norm="linf", targeted=False):  # type: ignore[no-untyped-def]
    eps = 0.1 if norm == "linf" else 1.0
    threat = EvasionThreat(norm=norm, eps=eps, bounds=digits.bounds, targeted=targeted)
    x, y = digits.x_test[:N], digits.y_test[:N]
    target = (y + 1) % digits.n_classes if targeted else None
    return attack(model, x, y, threat=threat, seed=3, target=target, batch_size=batch_size)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_linf_attacks_are_bit_identical_across_batch_sizes(
    name: str, model: nn.Module, digits: Dataset
) -> None:
    attack, targeted = ATTACKS[name]
    ref = _run(attack, model, digits, None, targeted=targeted)
    assert 0 < int(ref.success.sum()) < N  # a real attack on a real model: some fooled
    for bs in EXACT[:-1]:
        res = _run(attack, model, digits, bs, targeted=targeted)
        assert torch.equal(res.x_adv, ref.x_adv), bs
        assert torch.equal(res.success, ref.success), bs
        assert torch.equal(res.pred_clean, ref.pred_clean), bs
        assert res.gradients == ref.gradients
    one = _run(attack, model, digits, 1, targeted=targeted)
    assert torch.equal(one.success, ref.success)
    torch.testing.assert_close(one.x_adv, ref.x_adv, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["fgsm", "pgd-restarts", "noise"])
def test_l2_attacks_agree_across_batch_sizes(name: str, model: nn.Module,
                                             digits: Dataset) -> None:
    attack, _ = ATTACKS[name]
    ref = _run(attack, model, digits, None, norm="l2")
    for bs in (1, 7, 64):
        res = _run(attack, model, digits, bs, norm="l2")
        torch.testing.assert_close(res.x_adv, ref.x_adv, rtol=0, atol=1e-5)
        assert torch.equal(res.success, ref.success), bs


@pytest.mark.parametrize("targeted", [False, True])
def test_security_curve_is_bit_identical_across_batch_sizes(
    targeted: bool, model: nn.Module, digits: Dataset
) -> None:
    x, y = digits.x_test[:N], digits.y_test[:N]
    threats = [EvasionThreat(eps=e, bounds=digits.bounds, targeted=targeted)
               for e in (0.1, 0.03, 0.2)]
    target = (y + 3) % digits.n_classes if targeted else None

    def curve(bs: int | None) -> list:  # type: ignore[type-arg]
        return security_curve(PGD(steps=5, restarts=2, early_stop=True), model, x, y,
                              threats=threats, seed=5, target=target, batch_size=bs)

    ref = curve(None)
    assert len({int(r.success.sum()) for r in ref}) > 1  # eps matters on this model
    for bs in EXACT[:-1]:
        for a, b in zip(curve(bs), ref, strict=True):
            assert torch.equal(a.x_adv, b.x_adv), bs
            assert torch.equal(a.success, b.success), bs
            assert a.gradients == b.gradients
    for a, b in zip(curve(1), ref, strict=True):
        assert torch.equal(a.success, b.success)


def test_a_torch_dataset_gives_what_its_tensors_give(digits_mlp: nn.Module,
                                                     digits: Dataset) -> None:
    x, y = digits.x_test[:N], digits.y_test[:N]
    threat = EvasionThreat(eps=0.1, bounds=digits.bounds)
    attack = PGD(steps=4, restarts=2)
    ref = attack(digits_mlp, x, y, threat=threat, seed=1, batch_size=32)
    res = attack(digits_mlp, TensorDataset(x, y), threat=threat, seed=1, batch_size=32)
    assert torch.equal(res.x_adv, ref.x_adv)
    assert torch.equal(res.success, ref.success)
    assert torch.equal(res.y, ref.y)
    curve = security_curve(attack, digits_mlp, TensorDataset(x, y), threats=[threat], seed=0,
                           batch_size=32)
    assert torch.equal(curve[0].success,
                       security_curve(attack, digits_mlp, x, y, threats=[threat], seed=0,
                                      batch_size=32)[0].success)


def test_a_dataset_is_checked_as_it_is_read(digits_mlp: nn.Module, digits: Dataset) -> None:
    x, y = digits.x_test[:20].clone(), digits.y_test[:20]
    x[15, 0, 0, 0] = 3.0  # outside the bounds, in the second batch
    with pytest.raises(DataError, match="inside threat bounds"):
        PGD(steps=1)(digits_mlp, TensorDataset(x, y), threat=EvasionThreat(eps=0.1),
                     batch_size=8)
    with pytest.raises(ConfigError, match="y= is not allowed"):
        PGD(steps=1)(digits_mlp, TensorDataset(x, y), y, threat=EvasionThreat(eps=0.1))


def test_keep_adv_false_keeps_the_outcomes_only(digits_mlp: nn.Module,
                                                digits: Dataset) -> None:
    x, y = digits.x_test[:N], digits.y_test[:N]
    threat = EvasionThreat(eps=0.1, bounds=digits.bounds)
    kept = PGD(steps=3)(digits_mlp, x, y, threat=threat, seed=0, batch_size=40)
    light = PGD(steps=3)(digits_mlp, x, y, threat=threat, seed=0, batch_size=40,
                         keep_adv=False)
    assert light.x_adv is None
    assert torch.equal(light.success, kept.success)
    assert light.robust_accuracy == kept.robust_accuracy
    curve = security_curve(PGD(steps=3), digits_mlp, x, y, threats=[threat], seed=0,
                           keep_adv=False)
    assert curve[0].x_adv is None


class _Widest(nn.Module):
    """Wraps a model and records the largest batch any forward pass saw."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.widest = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.widest = max(self.widest, int(x.shape[0]))
        return self.inner(x)


@pytest.mark.parametrize("bs", [1, 16, 100])
def test_no_forward_pass_sees_more_than_batch_size(bs: int, digits_mlp: nn.Module,
                                                   digits: Dataset) -> None:
    wide = _Widest(digits_mlp)
    threat = EvasionThreat(eps=0.1, bounds=digits.bounds)
    x, y = digits.x_test[:N], digits.y_test[:N]
    PGD(steps=2, restarts=2)(wide, x, y, threat=threat, batch_size=bs)
    security_curve(PGD(steps=2), wide, x, y, threats=[threat, EvasionThreat(eps=0.2)],
                   batch_size=bs)
    assert wide.widest == bs
    wide.widest = 0
    FGSM()(wide, x, y, threat=threat)  # the default bounds a forward pass too
    assert wide.widest == min(N, DEFAULT_BATCH_SIZE)


def test_bad_batch_sizes_are_refused(digits_mlp: nn.Module, digits: Dataset) -> None:
    threat = EvasionThreat(eps=0.1)
    x, y = digits.x_test[:4], digits.y_test[:4]
    for bad in (0, -3, 2.5, "64", True):
        with pytest.raises(ConfigError, match="batch_size"):
            FGSM()(digits_mlp, x, y, threat=threat, batch_size=bad)
    with pytest.raises(ConfigError, match="keep_adv"):
        FGSM()(digits_mlp, x, y, threat=threat, keep_adv="no")


def test_sample_streams_depend_on_the_sample_and_stream_only() -> None:
    rng = SampleRNG(11, torch.arange(10))
    whole = rng.rand((3, 2), stream=4)
    ix = torch.tensor([7, 2, 9])
    assert torch.equal(rng.take(ix).rand((3, 2), stream=4), whole[ix])
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[1, 5]] = True
    assert torch.equal(rng.take(mask).randn((4,), stream=0), rng.randn((4,), stream=0)[mask])
    assert not torch.equal(rng.rand((3, 2), stream=5), whole)  # another stream
    assert not torch.equal(SampleRNG(12, torch.arange(10)).rand((3, 2), stream=4), whole)
    rows = whole.flatten(1)
    assert len({tuple(r.tolist()) for r in rows}) == 10  # samples differ from each other
    assert rng.take(torch.tensor([], dtype=torch.int64)).rand((2,), stream=0).shape == (0, 2)


def test_iter_slices_cover_everything_once() -> None:
    for n, bs in [(0, 4), (1, 4), (10, 3), (10, 10), (10, None), (5, 100)]:
        covered = [i for s in iter_slices(n, bs) for i in range(n)[s]]
        assert covered == list(range(n))
        assert all(s.stop - s.start <= (bs or n) for s in iter_slices(n, bs))
