"""A user's own ``nn.Module`` handed to the attacks, train, the metrics and evaluate_model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from poisonlab import FGSM, PGD, EvasionThreat, build_model, flip_labels, security_curve, train
from poisonlab.attacks import get_attack
from poisonlab.data import as_dataset
from poisonlab.errors import ConfigError, DataError, EvaluationWarning
from poisonlab.harness.pretrained import evaluate_model
from poisonlab.metrics import max_softmax, predict_proba

from .harness import Case

RNG = np.random.default_rng(0)
X = torch.from_numpy(RNG.random((12, 4), dtype=np.float32))
Y = torch.arange(12) % 3
T = EvasionThreat(eps=0.1)


class Net(nn.Module):
    """A linear layer whose output goes through ``post`` (the bug under test)."""

    def __init__(self, post: Callable[[nn.Module, torch.Tensor], Any], width: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, width)
        self.post = post

    def forward(self, x: torch.Tensor) -> Any:
        return self.post(self, x)


class Raises(nn.Module):
    """A forward pass that fails with an error of its own."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.error = error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self.error


def _logits(post: Callable[[nn.Module, torch.Tensor], Any]) -> Callable[[], nn.Module]:
    return lambda: Net(post)


WIDTH2 = _logits(lambda s, x: s.lin(x)[:, :2])
ONE_D = _logits(lambda s, x: s.lin(x).sum(1))
THREE_D = _logits(lambda s, x: s.lin(x)[:, None])
TUPLE = _logits(lambda s, x: (s.lin(x), None))
DICT = _logits(lambda s, x: {"logits": s.lin(x)})
NUMPY = _logits(lambda s, x: s.lin(x).detach().numpy())
INTS = _logits(lambda s, x: s.lin(x).long())
PROBS = _logits(lambda s, x: s.lin(x).softmax(1))
NAN = _logits(lambda s, x: s.lin(x) * float("nan"))
INF = _logits(lambda s, x: s.lin(x) + float("inf"))
DETACHED = _logits(lambda s, x: s.lin(x).detach())
CONSTANT = _logits(lambda s, x: s.lin.bias.expand(x.shape[0], 3))
VIA_NUMPY = _logits(lambda s, x: torch.from_numpy(s.lin(x).detach().numpy() * 2))
TYPE_ERROR = lambda: Raises(TypeError("forward() got an unexpected keyword 'mask'"))  # noqa: E731
VALUE_ERROR = lambda: Raises(ValueError("expected 3 channels"))  # noqa: E731
KEY_ERROR = lambda: Raises(KeyError("embedding"))  # noqa: E731


def _ds() -> Any:
    return as_dataset({"x_train": RNG.random((30, 4)), "y_train": np.arange(30) % 3,
                       "x_test": RNG.random((9, 4)), "y_test": np.arange(9) % 3}, name="t")


def _attack(make: Callable[[], nn.Module], attack: str = "pgd",
            **kw: Any) -> Callable[[Path], object]:
    attacks = {"pgd": PGD(steps=2), "fgsm": FGSM(), "noise": get_attack("noise")}
    return lambda tmp: attacks[attack](make(), X, Y, threat=T, seed=0, **kw)


def _evaluate(make: Callable[[], nn.Module], **kw: Any) -> Callable[[Path], object]:
    kw.setdefault("metrics", ["accuracy", "calibration"])
    return lambda tmp: evaluate_model(make(), _ds(), **kw)


def _train(make: Callable[[], nn.Module]) -> Callable[[Path], object]:
    return lambda tmp: train(make(), X, Y, epochs=1)


def _dropout_in_train() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3)).train()


def _batchnorm_in_train() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)).train()


class NoParams(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :3] * 2.0


PGD_EVASION = {"metrics": ["accuracy", "evasion"], "threats": [T],
               "attacks": [{"name": "pgd", "steps": 1}]}

CASES = [
    # ---------------------------------------------------------------- not a model
    Case("model", "model=None to an attack", lambda tmp: PGD(steps=1)(None, X, Y, threat=T),
         ConfigError, r"model=None is not allowed: expected a torch.nn.Module"),
    Case("model", "a plain function as the model", lambda tmp: FGSM()(
        lambda x: x, X, Y, threat=T), ConfigError,
         r"model=a function .*<lambda> is not allowed: expected a torch.nn.Module"),
    Case("model", "a model name (string) to train", lambda tmp: train("mlp", X, Y, epochs=1),
         ConfigError, r"model='mlp' is not allowed: expected a torch.nn.Module"),
    Case("model", "model=None to predict_proba", lambda tmp: predict_proba(None, X),
         ConfigError, r"model=None is not allowed"),
    Case("model", "model=None to evaluate_model",
         lambda tmp: evaluate_model(None, _ds(), metrics=["accuracy"]), ConfigError,
         r"model=None is not allowed"),
    # ---------------------------------------------------------------- output width / rank
    Case("model", "attack: output width 2 for labels 0..2", _attack(WIDTH2), DataError,
         r"y has labels in \[0, 2\]: expected class ids in \[0, 1\] to match the model's 2"),
    Case("model", "train: output width 2 for labels 0..2", _train(WIDTH2), DataError,
         r"y has labels in \[0, 2\]: expected class ids in \[0, 1\] to match the model's 2"),
    Case("model", "evaluate_model: output width 2 for a 3-class dataset", _evaluate(WIDTH2),
         ConfigError, r"the model returns 2 logits per input: expected logits of shape \(n, 3\)"),
    Case("model", "attack: 1-D output (n,)", _attack(ONE_D), DataError,
         r"model output has shape \(1,\): expected \(n, n_classes\)"),
    Case("model", "attack: 3-D output (n, 1, K)", _attack(THREE_D), DataError,
         r"model output has shape \(1, 1, 3\): expected \(n, n_classes\)"),
    Case("model", "train: 1-D output", _train(ONE_D), DataError,
         r"model output has shape \(1,\)"),
    Case("model", "evaluate_model: 1-D output", _evaluate(ONE_D), DataError,
         r"model output has shape \(1,\)"),
    Case("model", "predict_proba: 3-D output", lambda tmp: predict_proba(THREE_D(), X),
         DataError, r"model output has shape \(12, 1, 3\)"),
    Case("model", "max_softmax: 1-D output", lambda tmp: max_softmax(ONE_D(), X), DataError,
         r"model output has shape \(12,\)"),
    # ---------------------------------------------------------------- output type
    Case("model", "attack: forward returns a tuple", _attack(TUPLE), DataError,
         r"model output is a tuple: expected a tensor of logits"),
    Case("model", "attack: forward returns a dict", _attack(DICT), DataError,
         r"model output is a dict: expected a tensor of logits"),
    Case("model", "attack: forward returns a numpy array", _attack(NUMPY), DataError,
         r"model output is a ndarray: expected a tensor of logits"),
    Case("model", "attack: integer logits", _attack(INTS), DataError,
         r"model output has dtype torch.int64: expected floating-point logits"),
    Case("model", "train: forward returns a tuple", _train(TUPLE), DataError,
         r"model output is a tuple"),
    Case("model", "predict_proba: forward returns a dict", lambda tmp: predict_proba(DICT(), X),
         DataError, r"model output is a dict"),
    Case("model", "evaluate_model: forward returns a tuple", _evaluate(TUPLE), DataError,
         r"model output is a tuple"),
    # ---------------------------------------------------------------- probabilities
    Case("model", "attack: model returns softmax probabilities", _attack(PROBS),
         EvaluationWarning, r"look like probabilities, but poisonlab expects logits"),
    Case("model", "train: model returns softmax probabilities", _train(PROBS),
         EvaluationWarning, r"look like probabilities.*docs/checks\.md#model_outputs"),
    Case("model", "evaluate_model: model returns softmax probabilities", _evaluate(PROBS),
         EvaluationWarning, r"outputs for x\[:1\] lie in \[0, 1\] and sum to 1 per row"),
    # ---------------------------------------------------------------- factories
    Case("model", "a model factory that raises its own error",
         lambda tmp: build_model("tests.integration.byo_helpers:failing_factory", (4,), 3),
         ConfigError, r"model 'tests\.integration\.byo_helpers:failing_factory' raised "
         r"RuntimeError when built: no GPU kernel for 3 classes"),
    # ---------------------------------------------------------------- train mode
    Case("model", "attack: model left in train mode with dropout", _attack(_dropout_in_train),
         EvaluationWarning, r"the model is in train mode with Dropout layers: poisonlab "
         r"measures it in eval mode"),
    Case("model", "evaluate_model: model left in train mode with batch norm",
         _evaluate(_batchnorm_in_train), EvaluationWarning,
         r"the model is in train mode with BatchNorm1d layers.*call model\.eval\(\) first"),
    # ---------------------------------------------------------------- NaN / Inf
    Case("model", "attack: NaN logits", _attack(NAN), DataError,
         r"the model returned NaN or Inf logits for x\[:1\]"),
    Case("model", "attack: Inf logits", _attack(INF), DataError,
         r"the model returned NaN or Inf logits"),
    Case("model", "black-box attack (noise): NaN logits", _attack(NAN, "noise"), DataError,
         r"the model returned NaN or Inf logits"),
    Case("model", "evaluate_model: NaN logits", _evaluate(NAN), DataError,
         r"the model returned NaN or Inf logits"),
    Case("model", "train: NaN logits", _train(NAN), DataError,
         r"the model returned NaN or Inf logits"),
    # ---------------------------------------------------------------- gradients
    Case("model", "PGD on a model whose output is detached", _attack(DETACHED), ConfigError,
         r"attack 'pgd' needs the model's input gradients, but the model's output is "
         r"detached.*such as 'square'"),
    Case("model", "FGSM on a model that goes through numpy", _attack(VIA_NUMPY, "fgsm"),
         ConfigError, r"attack 'fgsm' needs the model's input gradients.*detached"),
    Case("model", "PGD on a model whose output ignores its input", _attack(CONSTANT),
         ConfigError, r"attack 'pgd' needs the model's input gradients"),
    Case("model", "security_curve with PGD on a detached model",
         lambda tmp: security_curve(PGD(steps=1), DETACHED(), X, Y, threats=[T]), ConfigError,
         r"attack 'pgd' needs the model's input gradients"),
    Case("model", "evaluate_model with PGD on a detached model",
         _evaluate(DETACHED, **PGD_EVASION), ConfigError,
         r"attack 'pgd' needs the model's input gradients"),
    Case("model", "train a detached model", _train(DETACHED), ConfigError,
         r"the model's output does not depend on its trainable parameters"),
    Case("model", "train a model without parameters", lambda tmp: train(NoParams(), X, Y),
         ConfigError, r"model NoParams has no trainable parameters"),
    Case("model", "adversarial label flips with a detached surrogate",
         lambda tmp: flip_labels(np.arange(20) % 3, rate=0.1, n_classes=3,
                                 strategy="adversarial", x=RNG.random((20, 4)),
                                 surrogate=DETACHED(), epochs=1),
         ConfigError, r"the model's output does not depend on its trainable parameters"),
    # ---------------------------------------------------------------- input shape
    Case("model", "attack: inputs of 5 features for a 4-feature model",
         lambda tmp: PGD(steps=1)(build_model("mlp", (4,), 3, seed=0), torch.rand(12, 5), Y,
                                  threat=T),
         DataError, r"x has input shape \(5,\), which the model cannot take: mat1 and mat2"),
    Case("model", "attack: a CNN given flat inputs",
         lambda tmp: FGSM()(build_model("cnn", (1, 8, 8), 3, seed=0), X, Y, threat=T),
         DataError, r"x has input shape \(4,\), which the model cannot take"),
    Case("model", "train: inputs the model cannot take",
         lambda tmp: train(build_model("mlp", (5,), 3, seed=0), X, Y, epochs=1), DataError,
         r"x has input shape \(4,\), which the model cannot take"),
    Case("model", "predict_proba: inputs the model cannot take",
         lambda tmp: predict_proba(build_model("mlp", (5,), 3, seed=0), X), DataError,
         r"x has input shape \(4,\), which the model cannot take"),
    Case("model", "evaluate_model: a model for another input shape",
         _evaluate(lambda: build_model("mlp", (5,), 3, seed=0)), DataError,
         r"x has input shape \(4,\), which the model cannot take"),
    # ---------------------------------------------------------------- errors of its own
    Case("model", "attack: forward raises TypeError", _attack(TYPE_ERROR), ConfigError,
         r"model Raises raised TypeError on x of shape \(1, 4\): forward\(\) got an "
         r"unexpected keyword 'mask'"),
    Case("model", "attack: forward raises ValueError", _attack(VALUE_ERROR, "fgsm"),
         ConfigError, r"model Raises raised ValueError on x of shape \(1, 4\): expected 3"),
    Case("model", "train: forward raises KeyError", _train(KEY_ERROR), ConfigError,
         r"model Raises raised KeyError on x of shape \(1, 4\): 'embedding'"),
    Case("model", "predict_proba: forward raises ValueError",
         lambda tmp: predict_proba(VALUE_ERROR(), X), ConfigError,
         r"model Raises raised ValueError on x of shape \(12, 4\)"),
    Case("model", "evaluate_model: forward raises TypeError", _evaluate(TYPE_ERROR),
         ConfigError, r"model Raises raised TypeError"),
]
