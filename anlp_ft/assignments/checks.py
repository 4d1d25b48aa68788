"""Public checks that students run from a lab to see whether an exercise is right.

A lab starts with ``check = Checker("01")`` and, after exercise ``ex1``, calls
``check("ex1", my_function)``. That runs ``ex1`` from ``anlp_ft.assignments.public.lab01``, which
raises :class:`CheckFailed` with a precise message when the work is wrong. An exercise still holding
the generated stub (``raise NotImplementedError``) is reported, not raised, so a blank lab runs top
to bottom without a stack trace.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from ..results import MISSING

__all__ = ["CheckFailed", "Checker", "MISSING", "attempt"]

PUBLIC_PACKAGE = "anlp_ft.assignments.public"

T = TypeVar("T")


class CheckFailed(AssertionError):
    """The student's work is wrong; the message says what to fix.

    An ``AssertionError`` so graders and pytest treat it like a failed ``assert``.
    """


def require(condition: bool, message: str) -> None:
    """Raise CheckFailed(message) unless condition holds: the public checks' one assertion."""
    if not condition:
        raise CheckFailed(message)


def _is_stub(error: NotImplementedError) -> bool:
    # The lab stub is a bare `raise NotImplementedError`. Library errors that happen to be
    # NotImplementedError (e.g. torch: "operator not implemented for 'MPS' backend") carry a
    # message and are real errors the student must see, not "not implemented yet".
    return not error.args


def _lab_module_name(lab: str) -> str:
    return f"lab{lab}"


def _available_labs() -> list[str]:
    package = importlib.import_module(PUBLIC_PACKAGE)
    names = {m.name for m in pkgutil.iter_modules(package.__path__)}
    names |= {n.rpartition(".")[2] for n in sys.modules if n.startswith(PUBLIC_PACKAGE + ".")}
    return sorted(n[3:] for n in names if re.fullmatch(r"lab\d+", n))


class Checker:
    """Runs the public checks of one lab: ``Checker("01")("ex1", *args, **kwargs)``."""

    def __init__(self, lab: str) -> None:
        # Accept "01", "1" and "lab01": students type all three.
        number = str(lab).strip().removeprefix("lab")
        self.lab = number.zfill(2) if number.isdigit() else number
        name = f"{PUBLIC_PACKAGE}.{_lab_module_name(self.lab)}"
        try:
            self._module: ModuleType = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:  # the lab exists but one of its own imports is missing
                raise
            available = ", ".join(_available_labs()) or "none"
            raise ValueError(f"unknown lab {lab!r}; available labs: {available}") from None

    @property
    def exercises(self) -> list[str]:
        """Names of the exercises this lab can check."""
        module = self._module
        if hasattr(module, "__all__"):
            return sorted(module.__all__)
        # Public functions defined in the module itself, not ones it imported.
        return sorted(
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and inspect.isfunction(value)
            and value.__module__ == module.__name__
        )

    def __call__(self, exercise: str, *args: Any, **kwargs: Any) -> bool:
        """Check ``exercise``; True if it passed, False if it is still the unimplemented stub.

        Raises :class:`CheckFailed` when the work is wrong and ``ValueError`` for an unknown
        exercise.
        """
        available = self.exercises
        if exercise not in available:
            raise ValueError(
                f"lab {self.lab} has no exercise {exercise!r}; available: {', '.join(available)}"
            )
        check_fn: Callable[..., str | None] = getattr(self._module, exercise)
        try:
            detail = check_fn(*args, **kwargs)
        except NotImplementedError as error:
            if not _is_stub(error):
                raise
            print(f"… {exercise} is not implemented yet (0 points so far)")
            return False
        except CheckFailed as error:
            # Drop the checker's own frames: the message is what the student needs, not our code.
            raise error.with_traceback(None) from None
        print(f"✓ {exercise} passed" + (f": {detail}" if detail else ""))
        return True

    def __repr__(self) -> str:
        return f"Checker({self.lab!r})"


def attempt(exercise: str, fn: Callable[..., T], *args: Any, default: Any = MISSING, **kwargs: Any) -> T | Any:
    """Call ``fn(*args, **kwargs)``, or return ``default`` (MISSING) while ``exercise`` is still the stub.

    Labs wrap cells downstream of an exercise in this so a blank lab still runs to the end; a
    MISSING argument counts as not implemented too, so a chain of attempts skips cleanly.
    """
    if any(a is MISSING for a in (*args, *kwargs.values())):
        print(f"… {exercise} skipped: it needs the result of an exercise that is not implemented yet")
        return default
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as error:
        if not _is_stub(error):
            raise
        name = getattr(fn, "__name__", repr(fn))
        print(f"… {exercise} not implemented: {name} skipped, using the default")
        return default
