"""One status vocabulary for every stage (like optimistix's ``RESULTS``).

The solver, the batched fit, detection, the pipeline, the CLI and its JSON reports all speak
:class:`Status`. Codes are plain ``int32`` inside jitted code (``jnp.where(bad, Status.NON_FINITE,
Status.OK)``); on the host ``Status(int(code))`` turns one back into a member, ``.label`` is the
short lower-case text written to JSON reports and printed by the CLI, ``.message`` one sentence.

A leaf module: it imports nothing from the package, so every stage may import it.
"""

from __future__ import annotations

import enum

__all__ = ["Status"]

_TEXT = {
    # name: (label, message)
    "OK": ("ok", "finished successfully"),
    "MAX_ITERATIONS": ("max iterations", "ran the iteration budget without meeting a tolerance"),
    "NON_FINITE": ("non-finite", "a value became NaN or infinite"),
    "SINGULAR": ("singular", "the linear system had no finite solution"),
    "DEGENERATE_INPUT": ("degenerate input", "too few finite, non-collinear landmarks to start from"),
    "DIVERGED": ("diverged", "the fitted landmarks ended behind the camera"),
    "UNREADABLE": ("unreadable", "the file is missing or not a readable image"),
    "NO_FACE": ("no face", "no face was found in the image"),
    "FIT_FAILED": ("fit failed", "the fit did not produce a usable head"),
    "FAILED": ("failed", "a later stage (texture, export) raised an error"),
}


class Status(enum.IntEnum):
    """Outcome codes shared by every stage; ``0`` is success everywhere.

    The solver reports ``OK`` (a tolerance met), ``MAX_ITERATIONS``, ``NON_FINITE`` or
    ``SINGULAR``; the fit ``OK``, ``NON_FINITE``, ``DEGENERATE_INPUT`` or ``DIVERGED`` (a fit runs a
    fixed iteration budget, so an unconverged solve is not a failure); detection and the pipeline
    add ``UNREADABLE``, ``NO_FACE``, ``FIT_FAILED`` and ``FAILED``.
    """

    OK = 0
    MAX_ITERATIONS = 1
    NON_FINITE = 2
    SINGULAR = 3
    DEGENERATE_INPUT = 4
    DIVERGED = 5
    UNREADABLE = 6
    NO_FACE = 7
    FIT_FAILED = 8
    FAILED = 9

    @property
    def label(self) -> str:
        """Short lower-case text for reports, e.g. ``"no face"``."""
        return _TEXT[self.name][0]

    @property
    def message(self) -> str:
        """One sentence saying what the code means."""
        return _TEXT[self.name][1]

    @classmethod
    def of(cls, code) -> "Status":
        """The member for an integer code (a Python int, or a 0-d numpy / JAX array)."""
        try:
            return cls(int(code))
        except ValueError:
            raise ValueError(f"unknown status code {code!r}; known: "
                             f"{', '.join(f'{s.value}={s.name}' for s in cls)}") from None

    @classmethod
    def from_label(cls, label: str) -> "Status":
        """The member whose ``label`` is ``label`` (reads back a JSON report)."""
        for s in cls:
            if s.label == label:
                return s
        raise ValueError(f"unknown status label {label!r}; known: {', '.join(s.label for s in cls)}")
