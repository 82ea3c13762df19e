"""Errors and warnings raised by poisonlab.

Every error a user can cause is a :class:`PoisonlabError`. Its message is one line that
names the field, the value it got and what is allowed; the CLI prints that line and exits
with code 2. Sanity checks warn with a :class:`PoisonlabWarning` subclass, which CI can
promote to an error (``-W error::poisonlab.errors.PoisonlabWarning``).
"""

from __future__ import annotations

import difflib


class PoisonlabError(Exception):
    """Base class of every error poisonlab raises on purpose."""


class ConfigError(PoisonlabError, ValueError):
    """A parameter, a suite entry or a CLI flag has a value that is not allowed."""


class UnknownNameError(ConfigError):
    """A name (dataset, model, attack, defense, metric...) is not registered."""


class DataError(PoisonlabError, ValueError):
    """Input arrays are malformed: wrong shape, wrong dtype, NaN, labels out of range."""


class SuiteError(ConfigError):
    """A suite file cannot be read or does not follow the suite format."""


class TrainingError(PoisonlabError, RuntimeError):
    """Training could not finish (for instance the loss became NaN)."""


class RunError(PoisonlabError, RuntimeError):
    """A run cannot go on for a reason outside its input: the output folder cannot be
    written (disk full, permissions) or a worker process died. Stored cells are kept."""


class AttackError(PoisonlabError, RuntimeError):
    """A third-party attack (an ``art:`` or ``foolbox:`` adapter) failed while it ran.

    The message is one line naming the attack, the threat and the library's own error
    (its type and first line); the original exception is chained as ``__cause__``. A suite
    records the cell as failed and goes on with the others.
    """


class PoisonlabWarning(UserWarning):
    """Base class of the sanity-check warnings."""


class EvaluationWarning(PoisonlabWarning):
    """An evaluation is likely to be misleading (see docs/checks.md)."""


class InputWarning(PoisonlabWarning):
    """An input that is allowed but likely wrong: an eps out of scale with the data, bounds
    in other units than the data (:mod:`poisonlab.input_sanity`)."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none:
    how a one-line error quotes an error it wraps."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def did_you_mean(name: str, options: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or ``""``; any ``name`` (a YAML key
    may be a number or null) is compared as its string."""
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
