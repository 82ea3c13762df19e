"""Partition aggregation (DPA / Finite Aggregation) and its certificates (issue 22).

The certificate is checked three ways: recomputed from the returned votes; against a
brute-force search over what an attacker can do to the votes; and end to end, by
flipping ``r`` training labels where they hurt most, retraining, and finding the
prediction unchanged (and, with majority-vote base models, changed by ``r + 1`` flips).
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

import poisonlab as pl
from poisonlab.certify import dpa_radius, fa_radius
from poisonlab.defenses._stacked import fit_stacked
from poisonlab.defenses.features import fit_features, kmeans
from poisonlab.defenses.partition import PartitionEnsemble, bucket_members, buckets, fa_shifts
from poisonlab.errors import ConfigError, DataError


class Majority(nn.Module):
    """A base model that ignores its input: trained by cross-entropy its bias converges to
    the log class frequencies, so it votes for its partition's majority label."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], -1)


def majority_model(*, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return Majority(n_classes)


class BatchNormMLP(nn.Module):
    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                 nn.Linear(16, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def bn_model(*, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return BatchNormMLP(input_shape[0], n_classes)


def _train(ds: pl.Dataset, y: torch.Tensor, **params: object) -> PartitionEnsemble:
    d = pl.get_defense("dpa", **{"k": 10, "features": "pca", "epochs": 30, **params})
    m = pl.train(pl.build_model("logistic", ds.input_shape, ds.n_classes, seed=0),
                 ds.x_train, y, defense=d, seed=0)
    assert isinstance(m, PartitionEnsemble)
    return m


@pytest.fixture(scope="module")
def dpa_digits(digits: pl.Dataset) -> PartitionEnsemble:
    return _train(digits, digits.y_train)


# --------------------------------------------------------------------------- the formula


def _moves_to_change(votes: list[int]) -> int:
    """Brute force: fewest single-vote moves (a flip moves one vote) that change the
    plurality vote (ties to the smaller class)."""
    pred = max(range(len(votes)), key=lambda c: (votes[c], -c))
    best = 10**9
    for c in range(len(votes)):
        if c == pred:
            continue
        v = list(votes)
        for moves in range(1, votes[pred] + 1):
            v[pred] -= 1
            v[c] += 1
            if max(range(len(v)), key=lambda j: (v[j], -j)) != pred:
                best = min(best, moves)
                break
    return best


def test_dpa_radius_is_one_less_than_the_fewest_vote_moves_that_change_the_vote() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        k, n_cls = int(torch.randint(1, 12, (1,), generator=g)), 4
        votes = torch.bincount(torch.randint(0, n_cls, (k,), generator=g), minlength=n_cls)
        r = int(dpa_radius(votes[None])[0])
        assert r == _moves_to_change(votes.tolist()) - 1, votes.tolist()


def _fa_brute_force(bp: torch.Tensor, n_classes: int, members: torch.Tensor) -> int:
    """Fewest corrupted buckets (each may set all its classifiers' votes) that change the
    vote, minus one: the exact radius of a Finite Aggregation ensemble."""
    def pred_of(p: torch.Tensor) -> int:
        return int(torch.bincount(p, minlength=n_classes).argmax())

    pred = pred_of(bp)
    for size in range(1, members.shape[0] + 1):
        for subset in itertools.combinations(range(members.shape[0]), size):
            hit = members[list(subset)].reshape(-1).unique()
            for c in range(n_classes):
                p = bp.clone()
                p[hit] = c
                if pred_of(p) != pred:
                    return size - 1
    return members.shape[0]


def test_fa_radius_is_sound_and_equals_dpa_for_d_1() -> None:
    g = torch.Generator().manual_seed(1)
    for k, d in ((3, 2), (2, 3), (4, 2), (6, 1)):
        members = bucket_members(k * d, fa_shifts(k, d))
        for _ in range(25):
            bp = torch.randint(0, 3, (1, k * d), generator=g)
            r = int(fa_radius(bp, 3, members)[0])
            exact = _fa_brute_force(bp[0], 3, members)
            assert 0 <= r <= exact, (bp.tolist(), r, exact)
            if d == 1:
                votes = torch.bincount(bp[0], minlength=3)[None]
                assert r == exact == int(dpa_radius(votes)[0])


# --------------------------------------------------------------------------- the API


def test_certificate_is_recomputed_from_its_votes(dpa_digits: PartitionEnsemble,
                                                  digits: pl.Dataset) -> None:
    c = pl.certify(dpa_digits, digits.x_test)
    n = len(digits.x_test)
    assert c.votes.shape == (n, 10) and c.base_predictions.shape == (n, 10)
    assert c.votes.dtype == c.radius.dtype == torch.int64
    assert torch.equal(c.votes, torch.nn.functional.one_hot(c.base_predictions, 10).sum(1))
    assert torch.equal(c.votes.sum(1), torch.full((n,), 10))
    assert torch.equal(c.prediction, c.votes.argmax(1))
    assert torch.equal(c.radius, dpa_radius(c.votes))
    # The ensemble's forward is the vote counts: every metric and attack sees them.
    with torch.no_grad():
        assert torch.equal(dpa_digits(digits.x_test), c.votes.float())
    acc = float((c.prediction == digits.y_test).float().mean())
    assert c.certified_accuracy(0, digits.y_test) == pytest.approx(acc)
    curve = c.curve(digits.y_test)
    assert list(curve.values()) == sorted(curve.values(), reverse=True)
    assert c.certified_accuracy(0.01, digits.y_test) == c.certified_accuracy(
        round(0.01 * len(digits.x_train)), digits.y_test)
    med = c.median_radius(digits.y_test)
    assert c.certified_accuracy(med, digits.y_test) >= 0.5 > c.certified_accuracy(
        med + 1, digits.y_test)
    assert acc > 0.8 and c.threat == "label flips"


def test_certify_gives_the_same_numbers_for_every_batch_size(
        dpa_digits: PartitionEnsemble, digits: pl.Dataset) -> None:
    ref = pl.certify(dpa_digits, digits.x_test, batch_size=None)
    for bs in (1, 7, 64):
        c = pl.certify(dpa_digits, digits.x_test, batch_size=bs)
        assert torch.equal(c.base_predictions, ref.base_predictions)
        assert torch.equal(c.radius, ref.radius)


def test_partition_depends_on_the_inputs_alone(digits: pl.Dataset) -> None:
    d = pl.get_defense("dpa", k=10, features="pca")
    parts = d.partition(digits.x_train)
    assert parts.shape == (len(digits.x_train),) and int(parts.max()) < 10
    perm = torch.randperm(len(digits.x_train), generator=torch.Generator().manual_seed(0))
    assert torch.equal(d.partition(digits.x_train[perm]), parts[perm])  # per input
    assert (torch.bincount(parts, minlength=10) > 0).all()
    # Permuting all the labels leaves the partition and the feature map as they were:
    # the same inputs reach the same base model.
    y_perm = digits.y_train[perm]
    m1 = _train(digits, digits.y_train, epochs=1)
    m2 = _train(digits, y_perm, epochs=1)
    for a, b in zip(m1.features.state_dict().values(), m2.features.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    fa = pl.get_defense("dpa", k=5, d=3).partition(digits.x_train)
    assert fa.shape == (len(digits.x_train), 3)
    assert (fa.sort(1).values.diff(1) > 0).all()  # d distinct base models per input


def test_a_flipped_label_changes_only_the_base_model_of_its_partition(
        digits: pl.Dataset, dpa_digits: PartitionEnsemble) -> None:
    d = pl.get_defense("dpa", k=10)
    parts = d.partition(digits.x_train)
    y = digits.y_train.clone()
    i = int((parts == 4).nonzero()[0, 0])
    y[i] = (y[i] + 1) % 10
    m = _train(digits, y)
    for j, (a, b) in enumerate(zip(m.bases, dpa_digits.bases, strict=True)):
        same = all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(),
                                                     strict=True))
        assert same == (j != 4), j


def _flip_where_it_hurts(ds: Any, cert: pl.Certificate, point: int, flips: int,
                         parts: torch.Tensor) -> torch.Tensor:
    """Flip one label in each of ``flips`` partitions that vote for the prediction, to the
    runner-up class."""
    pred = int(cert.prediction[point])
    votes = cert.votes[point].clone()
    votes[pred] = -1
    runner = int(votes.argmax())
    voters = (cert.base_predictions[point] == pred).nonzero()[:, 0][:flips]
    y = ds.y_train.clone()
    for j in voters.tolist():
        members = (parts == j).nonzero()[:, 0]
        target = members[y[members] != runner][0]
        y[target] = runner
    return y


@pytest.mark.slow
def test_flipping_r_labels_never_changes_a_certified_prediction(
        digits: pl.Dataset, dpa_digits: PartitionEnsemble) -> None:
    cert = pl.certify(dpa_digits, digits.x_test)
    parts = pl.get_defense("dpa", k=10).partition(digits.x_train)
    candidates = (cert.radius >= 1).nonzero()[:, 0]
    picks = candidates[torch.randperm(len(candidates),
                                      generator=torch.Generator().manual_seed(0))[:4]]
    for p in picks.tolist():
        y = _flip_where_it_hurts(digits, cert, p, int(cert.radius[p]), parts)
        assert int((y != digits.y_train).sum()) == int(cert.radius[p])
        again = pl.certify(_train(digits, y), digits.x_test[p:p + 1])
        assert int(again.prediction[0]) == int(cert.prediction[p])


def _majority_data(n_pred: int, n_other: int) -> tuple[Any, pl.Defense]:
    """Partitions of 3 points (rule=index): ``n_pred`` with labels (0, 0, 1) and
    ``n_other`` with (1, 1, 0); one flip changes a partition's majority."""
    k = n_pred + n_other
    labels = torch.empty(3 * k, dtype=torch.int64)
    for j in range(k):  # point i goes to partition i mod k
        lab = (0, 0, 1) if j < n_pred else (1, 1, 0)
        for r in range(3):
            labels[r * k + j] = lab[r]
    x = torch.rand(3 * k, 2, generator=torch.Generator().manual_seed(0))
    ds = SimpleNamespace(x_train=x, y_train=labels, x_test=x[:1])
    d = pl.get_defense("dpa", k=k, features=None, rule="index", epochs=200, lr=0.05,
                       weight_decay=0, base=f"{__name__}:majority_model")
    return ds, d


def test_the_bound_is_tight_with_majority_vote_base_models() -> None:
    ds, d = _majority_data(n_pred=6, n_other=3)
    model = pl.build_model("logistic", (2,), 2)

    def certify(y: torch.Tensor) -> pl.Certificate:
        return pl.certify(pl.train(model, ds.x_train, y, defense=d, seed=0, batch_size=4),
                          ds.x_test)

    c = certify(ds.y_train)
    assert c.votes[0].tolist() == [6, 3] and int(c.radius[0]) == 1
    parts = d.partition(ds.x_train)
    for flips, changed in ((1, False), (2, True)):
        y = _flip_where_it_hurts(ds, c, 0, flips, parts)
        after = certify(y)
        assert (int(after.prediction[0]) != 0) == changed, (flips, after.votes.tolist())


@pytest.mark.slow
def test_finite_aggregation_survives_its_radius(digits: pl.Dataset) -> None:
    fa = _train(digits, digits.y_train, k=5, d=2)
    cert = pl.certify(fa, digits.x_test)
    assert len(fa.bases) == 10 and torch.equal(cert.votes.sum(1), torch.full(
        (len(digits.x_test),), 10))
    members = bucket_members(10, fa.shifts)
    bucket = buckets(digits.x_train, 10)
    p = int((cert.radius >= 1).nonzero()[0, 0])
    pred = int(cert.prediction[p])
    # The attacker corrupts the buckets that close the gap most, one flip per bucket.
    bp = cert.base_predictions[p]
    votes = cert.votes[p].clone()
    votes[pred] = -1
    runner = int(votes.argmax())
    gain = (bp[members] == pred).sum(1)
    y = digits.y_train.clone()
    for h in gain.argsort(descending=True)[: int(cert.radius[p])].tolist():
        inside = (bucket == h).nonzero()[:, 0]
        y[inside[y[inside] != runner][0]] = runner
    again = pl.certify(_train(digits, y, k=5, d=2), digits.x_test[p:p + 1])
    assert int(again.prediction[0]) == pred


# --------------------------------------------------------------------------- training


def test_vectorised_training_matches_one_model_at_a_time(digits: pl.Dataset) -> None:
    x = digits.x_train.reshape(len(digits.x_train), -1)
    groups = [torch.arange(0, 300), torch.arange(300, 420), torch.arange(420, 1000)]
    built = [[pl.build_model("mlp", (64,), 10, seed=s) for s in range(3)] for _ in range(2)]
    fit_stacked(built[0], x, digits.y_train, groups, [1, 2, 3], epochs=3, batch_size=64,
                lr=0.01, weight_decay=0.0)
    for i, m in enumerate(built[1]):  # each alone: the same schedule and Adam
        fit_stacked([m], x, digits.y_train, [groups[i]], [i + 1], epochs=3,
                    batch_size=64, lr=0.01, weight_decay=0.0)
    for a, b in zip(built[0], built[1], strict=True):
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_the_per_model_update_is_torchs_adam(digits: pl.Dataset) -> None:
    # Full batch (one batch per epoch), so the shuffle does not matter: 20 steps of the
    # written-out update equal 20 steps of torch.optim.Adam with L2 weight decay.
    x = digits.x_train[:200].reshape(200, -1)
    y = digits.y_train[:200]
    ours, ref = (pl.build_model("logistic", (64,), 10, seed=3) for _ in range(2))
    fit_stacked([ours], x, y, [torch.arange(200)], [0], epochs=20, batch_size=256,
                lr=0.05, weight_decay=0.01)
    opt = torch.optim.Adam(ref.parameters(), lr=0.05, weight_decay=0.01)
    ref.train()
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(x), y).backward()
        opt.step()
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_models_with_buffers_train_one_at_a_time_and_learn(digits: pl.Dataset) -> None:
    d = pl.get_defense("dpa", k=4, features="pca", base=f"{__name__}:bn_model", epochs=20)
    m = pl.train(pl.build_model("logistic", digits.input_shape, 10), digits.x_train,
                 digits.y_train, defense=d, seed=0)
    c = pl.certify(m, digits.x_test)
    assert float((c.prediction == digits.y_test).float().mean()) > 0.8


def test_training_is_deterministic_per_seed(digits: pl.Dataset,
                                            dpa_digits: PartitionEnsemble) -> None:
    again = _train(digits, digits.y_train)
    for a, b in zip(again.state_dict().values(), dpa_digits.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    d = pl.get_defense("dpa", k=10, epochs=30)
    other = pl.train(pl.build_model("logistic", digits.input_shape, 10), digits.x_train,
                     digits.y_train, defense=d, seed=1)
    assert not torch.equal(other.bases[0].state_dict()["1.weight"],
                           dpa_digits.bases[0].state_dict()["1.weight"])


def test_copies_of_the_given_model_on_raw_inputs(digits: pl.Dataset) -> None:
    d = pl.get_defense("dpa", k=5, features=None, base=None, epochs=20)
    model = pl.build_model("mlp", digits.input_shape, 10, seed=0)
    m = pl.train(model, digits.x_train, digits.y_train, defense=d, seed=0)
    c = pl.certify(m, digits.x_test)
    assert len(m.bases) == 5 and c.threat == "label flips, insertions and deletions"
    assert float((c.prediction == digits.y_test).float().mean()) > 0.8


def test_gradient_attacks_see_the_soft_votes(dpa_digits: PartitionEnsemble,
                                             digits: pl.Dataset) -> None:
    threat = pl.EvasionThreat(norm="linf", eps=0.3, bounds=digits.bounds)
    x, y = digits.x_test[:100], digits.y_test[:100]
    res = pl.PGD(steps=10)(dpa_digits, x, y, threat=threat, seed=0)
    assert float((res.x_adv - x).abs().max()) <= 0.3 + 1e-6
    assert float(res.success.float().mean()) > 0.3  # not a masked (zero) gradient


# --------------------------------------------------------------------------- features


def test_pca_features_project_on_the_principal_directions(digits: pl.Dataset) -> None:
    from sklearn.decomposition import PCA

    x = digits.x_train
    f = fit_features("pca", x, n_components=5, seed=0)
    z = f(x).detach()
    ref = PCA(5).fit_transform(x.reshape(len(x), -1).numpy())
    ref = (ref - ref.mean(0)) / ref.std(0)
    for j in range(5):  # the same components, up to sign
        corr = torch.corrcoef(torch.stack([z[:, j], torch.as_tensor(ref[:, j]).float()]))
        assert abs(float(corr[0, 1])) > 0.999
    torch.testing.assert_close(z.mean(0), torch.zeros(5), atol=1e-4, rtol=0)


def test_patch_kmeans_features_are_seeded_and_shaped(digits: pl.Dataset) -> None:
    x = digits.x_train[:200]
    a = fit_features("patch_kmeans", x, n_components=8, patch=3, seed=0)
    b = fit_features("patch_kmeans", x, n_components=8, patch=3, seed=0)
    assert a(x).shape == (200, 32)
    assert torch.equal(a(x), b(x))
    with pytest.raises(ConfigError, match="patch=9"):
        fit_features("patch_kmeans", x, patch=9)
    with pytest.raises(ConfigError, match="image inputs"):
        fit_features("patch_kmeans", x.reshape(200, -1))


def test_kmeans_finds_separated_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    z = torch.cat([c + torch.randn(50, 2, generator=g, dtype=torch.float64) for c in centres])
    found = kmeans(z, 3, generator=torch.Generator().manual_seed(1), iters=20)
    dist = torch.cdist(found, centres).min(1).values
    assert float(dist.max()) < 1.0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("params, match", [
    ({"k": 1}, "k=1"),
    ({"d": 0}, "d=0"),
    ({"rule": "label"}, "rule='label'"),
    ({"features": "autoencoder"}, "features='autoencoder'"),
    ({"base": None}, "base=null"),
    ({"epochs": 0}, "epochs=0"),
    ({"lr": 0}, "lr=0"),
])
def test_bad_parameters_name_the_field(params: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        pl.get_defense("dpa", **params)


def test_refusals(digits: pl.Dataset, digits_mlp: nn.Module) -> None:
    with pytest.raises(ConfigError, match="certify needs the ensemble"):
        pl.certify(digits_mlp, digits.x_test)
    with pytest.raises(ConfigError, match="certificate holds for no other defense"):
        pl.get_defense("compose", defenses=["dpa", "label_smoothing"])
    d = pl.get_defense("dpa", k=500, features=None)
    with pytest.raises(DataError, match="got no training point"):
        pl.train(pl.build_model("logistic", (64,), 10), digits.x_train[:100].reshape(100, -1),
                 digits.y_train[:100], defense=d)
    assert pl.get_defense("partition_aggregation") == pl.get_defense("dpa")


def test_a_base_model_with_parameters(digits: pl.Dataset) -> None:
    d = pl.get_defense("dpa", k=4, base={"name": "mlp", "hidden": [16]}, epochs=20)
    m = pl.train(pl.build_model("logistic", digits.input_shape, 10), digits.x_train,
                 digits.y_train, defense=d, seed=0)
    first = next(p for p in m.bases[0].parameters() if p.dim() == 2)
    assert first.shape == (16, 30)  # 16 hidden units on the 30 PCA features
    c = pl.certify(m, digits.x_test)
    assert float((c.prediction == digits.y_test).float().mean()) > 0.8
    with pytest.raises(ConfigError, match="base=3 is not allowed"):
        pl.get_defense("dpa", base=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dpa_trains_and_certifies_on_cuda(digits: pl.Dataset,
                                          dpa_digits: PartitionEnsemble) -> None:
    model = pl.build_model("logistic", digits.input_shape, 10).to("cuda")
    d = pl.get_defense("dpa", k=10, features="pca", epochs=30)
    m = pl.train(model, digits.x_train, digits.y_train, defense=d, seed=0)
    assert all(p.device.type == "cuda" for p in m.parameters())
    c = pl.certify(m, digits.x_test)
    ref = pl.certify(dpa_digits, digits.x_test)
    assert torch.equal(c.votes.sum(1), ref.votes.sum(1))
    # Float differences between the devices may move a vote near a tie, not the accuracy.
    assert float((c.prediction == ref.prediction).float().mean()) > 0.97
