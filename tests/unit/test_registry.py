"""The one Registry type: decorator registration, did-you-mean, lazy entries, duplicates."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from poisonlab import (
    ConfigError,
    Registry,
    UnknownNameError,
    get_attack,
    get_defense,
)
from poisonlab.attacks import attacks
from poisonlab.data import datasets
from poisonlab.defenses import defenses
from poisonlab.models import models
from poisonlab.registry import did_you_mean


@pytest.fixture
def reg() -> Registry[object]:
    r: Registry[object] = Registry("widget")

    @r.register("alpha", help="the first widget")
    def alpha() -> str:
        return "a"

    @r.register("beta")
    def beta() -> str:
        """Second widget.

        More text that is not part of the help line.
        """
        return "b"

    return r


def test_decorator_registration_returns_the_object_unchanged(reg: Registry[object]) -> None:
    fn = reg.get("alpha")
    assert callable(fn)
    assert fn() == "a"  # type: ignore[operator]


def test_names_are_sorted_and_container_protocol_works(reg: Registry[object]) -> None:
    reg.add("aardvark", object())
    assert reg.names() == ["aardvark", "alpha", "beta"]
    assert list(reg) == reg.names()
    assert len(reg) == 3
    assert "beta" in reg
    assert "gamma" not in reg


def test_help_is_the_given_text_or_the_first_docstring_line(reg: Registry[object]) -> None:
    assert reg.help("alpha") == "the first widget"
    assert reg.help("beta") == "Second widget."


def test_typo_gets_a_did_you_mean_hint(reg: Registry[object]) -> None:
    with pytest.raises(UnknownNameError, match=r"widget='alpah' is not known.*mean 'alpha'"):
        reg.get("alpah")


def test_unknown_name_lists_the_options_without_a_bogus_hint(reg: Registry[object]) -> None:
    with pytest.raises(UnknownNameError, match=r"expected one of alpha, beta$"):
        reg.get("zzzzzz")


def test_non_string_name_is_an_unknown_name(reg: Registry[object]) -> None:
    with pytest.raises(UnknownNameError, match=r"widget=3 is not known"):
        reg.get(3)  # type: ignore[arg-type]


def test_unknown_name_error_is_a_config_error() -> None:
    assert issubclass(UnknownNameError, ConfigError)


def test_duplicate_add_is_rejected(reg: Registry[object]) -> None:
    with pytest.raises(ConfigError, match=r"widget 'alpha' is already registered"):
        reg.add("alpha", object())


def test_duplicate_decorator_registration_is_rejected(reg: Registry[object]) -> None:
    with pytest.raises(ConfigError, match=r"widget 'beta' is already registered"):

        @reg.register("beta")
        def other() -> None:
            return None


def test_duplicate_registration_keeps_the_first_entry(reg: Registry[object]) -> None:
    first = reg.get("alpha")
    with pytest.raises(ConfigError, match=r"already registered"):
        reg.add("alpha", "math:sqrt")
    assert reg.get("alpha") is first


def test_lazy_entry_resolves_module_attr() -> None:
    r: Registry[object] = Registry("fn")
    r.add("sqrt", "math:sqrt")
    assert r.get("sqrt") is math.sqrt
    assert r.get("sqrt") is math.sqrt  # resolved once, cached


def test_lazy_entry_imports_its_module_only_on_get(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "poisonlab_test_lazy_probe_mod"
    (tmp_path / f"{module}.py").write_text("VALUE = object()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    r: Registry[object] = Registry("thing")
    r.add("probe", f"{module}:VALUE")
    assert module not in sys.modules
    value = r.get("probe")
    assert module in sys.modules
    assert value is sys.modules[module].VALUE
    monkeypatch.delitem(sys.modules, module)


def test_lazy_entry_help_is_not_the_str_docstring() -> None:
    # A lazy "module:attr" entry registered without help= must not take its help line from
    # the *string* object (str.__doc__ is "str(object='') -> str"); it should be empty or
    # describe the target.
    r: Registry[object] = Registry("fn")
    r.add("sqrt", "math:sqrt")
    target_line = (math.sqrt.__doc__ or "").strip().splitlines()[0]
    assert r.help("sqrt") in ("", target_line)


def test_help_of_unknown_name_raises(reg: Registry[object]) -> None:
    with pytest.raises(UnknownNameError, match=r"'nope'"):
        reg.help("nope")


def test_did_you_mean_helper() -> None:
    assert did_you_mean("label_smothing", ["label_smoothing", "none"]) == (
        " (did you mean 'label_smoothing'?)"
    )
    assert did_you_mean("qqq", ["label_smoothing", "none"]) == ""


# --------------------------------------------------------------------------- the built-ins


def test_get_defense_typo_suggests_label_smoothing() -> None:
    with pytest.raises(
        UnknownNameError, match=r"defense='label_smothing'.*did you mean 'label_smoothing'"
    ):
        get_defense("label_smothing")


def test_get_attack_typo_suggests_pgd() -> None:
    with pytest.raises(UnknownNameError, match=r"attack='pgdd'.*did you mean 'pgd'"):
        get_attack("pgdd")


def test_get_attack_rejects_unknown_parameters() -> None:
    with pytest.raises(ConfigError, match=r"attack 'pgd' got unknown parameter 'step'.*'steps'"):
        get_attack("pgd", step=10)


def test_get_attack_builds_with_settings() -> None:
    pgd = get_attack("pgd", steps=7, restarts=2)
    assert (pgd.steps, pgd.restarts) == (7, 2)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("registry", "names"),
    [
        (datasets, {"digits", "mnist5k", "moons", "blobs"}),
        (models, {"logistic", "mlp", "cnn"}),
        (defenses, {"none", "flip_augment", "label_smoothing", "confidence_penalty"}),
        (attacks, {"fgsm", "pgd"}),
    ],
    ids=["datasets", "models", "defenses", "attacks"],
)
def test_contract_names_are_registered(registry: Registry[object], names: set[str]) -> None:
    assert names <= set(registry.names())


def test_registries_do_not_shadow_the_subpackages() -> None:
    # `import poisonlab.models as m` must give the module, not the models registry.
    import importlib

    import poisonlab
    import poisonlab.attacks.label_flip as label_flip
    import poisonlab.models as models_module
    from poisonlab.attacks import attacks
    from poisonlab.models import models

    assert models_module is importlib.import_module("poisonlab.models")
    assert hasattr(label_flip, "flip_labels")
    assert poisonlab.attacks is importlib.import_module("poisonlab.attacks")
    assert poisonlab.defenses is importlib.import_module("poisonlab.defenses")
    assert "pgd" in attacks.names() and "mlp" in models.names()
