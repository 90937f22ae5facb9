"""Read and write iBUG ``.pts`` landmark files.

Format (300-W / iBUG)::

    version: 1
    n_points: 68
    {
    x0 y0
    ...
    }

Coordinates are pixels, x right, y down. Files differ in their index base: iBUG/300-W
(MATLAB style) put the centre of the top-left pixel at (1, 1), dlib at (0, 0). The caller must
say which (there is no way to tell from the file); :func:`read_pts` always returns 0-based
coordinates (centre of the top-left pixel at (0, 0)).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def read_pts(path: str | os.PathLike, index_base: int) -> np.ndarray:
    """Landmarks ``[N, 2]`` float32, 0-based pixel coordinates, from an iBUG ``.pts`` file.

    Args:
      path: the ``.pts`` file.
      index_base: 1 if the file's top-left pixel centre is (1, 1) (iBUG/300-W, menpo), 0 if it
        is (0, 0) (dlib). ``index_base`` is subtracted from every coordinate.

    Raises:
      ValueError: unknown ``index_base``, missing or malformed header, missing braces, a
        non-numeric or non-finite coordinate, a row without exactly two numbers, or a point
        count that differs from ``n_points``. The message names the file (and line).
      FileNotFoundError: the file does not exist.
    """
    if index_base not in (0, 1):
        raise ValueError(f"read_pts: index_base must be 0 or 1, got {index_base!r}")
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig", errors="strict")
    # Keep original line numbers for error messages; blank lines are allowed anywhere.
    lines = [(i + 1, line.strip()) for i, line in enumerate(text.splitlines()) if line.strip()]
    n_points, body_start = _parse_header(lines, path)
    points = _parse_body(lines[body_start:], path)
    if points.shape[0] != n_points:
        raise ValueError(
            f"{path}: header says n_points: {n_points} but the file has {points.shape[0]} points")
    return (points - index_base).astype(np.float32)


def write_pts(path: str | os.PathLike, points: np.ndarray, index_base: int) -> None:
    """Write 0-based pixel coordinates ``points`` ``[N, 2]`` as an iBUG ``.pts`` file.

    ``index_base`` is added back, so ``read_pts(p, b)`` returns what ``write_pts(p, x, b)`` wrote
    (to the 6 decimals stored).
    """
    if index_base not in (0, 1):
        raise ValueError(f"write_pts: index_base must be 0 or 1, got {index_base!r}")
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"write_pts: points must have shape [N, 2], got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("write_pts: points contain NaN or inf")
    rows = "\n".join(f"{x:.6f} {y:.6f}" for x, y in points + index_base)
    Path(path).write_text(f"version: 1\nn_points: {len(points)}\n{{\n{rows}\n}}\n")


def _parse_header(lines: list[tuple[int, str]], path: Path) -> tuple[int, int]:
    """``(n_points, index of the first line after '{')`` from the header lines."""
    n_points = None
    for k, (lineno, line) in enumerate(lines):
        if line == "{":
            if n_points is None:
                raise ValueError(f"{path}: no 'n_points:' line before '{{' (line {lineno})")
            return n_points, k + 1
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{path}: line {lineno}: expected 'key: value' header or '{{', "
                             f"got {line[:60]!r}")
        if key.strip().lower() == "n_points":
            try:
                n_points = int(value.strip())
            except ValueError:
                raise ValueError(f"{path}: line {lineno}: n_points is not an integer: "
                                 f"{value.strip()[:40]!r}") from None
            if n_points < 0:
                raise ValueError(f"{path}: line {lineno}: negative n_points {n_points}")
    raise ValueError(f"{path}: no opening '{{' found (empty or truncated .pts file?)")


def _parse_body(lines: list[tuple[int, str]], path: Path) -> np.ndarray:
    """Point rows up to the closing '}' as ``[N, 2]`` float64."""
    rows = []
    for k, (lineno, line) in enumerate(lines):
        if line == "}":
            if k != len(lines) - 1:
                raise ValueError(f"{path}: line {lines[k + 1][0]}: unexpected content after '}}'")
            return np.asarray(rows, dtype=np.float64).reshape(-1, 2)
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{path}: line {lineno}: expected 'x y', got {line[:60]!r}")
        try:
            xy = (float(fields[0]), float(fields[1]))
        except ValueError:
            raise ValueError(f"{path}: line {lineno}: non-numeric coordinate {line[:60]!r}") from None
        if not all(np.isfinite(xy)):
            raise ValueError(f"{path}: line {lineno}: non-finite coordinate {line[:60]!r}")
        rows.append(xy)
    raise ValueError(f"{path}: missing closing '}}' (truncated .pts file?)")
