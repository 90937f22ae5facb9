"""What the landmarks stage returns: one face, one file of a batch, one failed file."""

from __future__ import annotations

import dataclasses

import numpy as np

from avatar_jax.status import Status


@dataclasses.dataclass(frozen=True)
class FaceLandmarks:
    """One face.

    Attributes:
      box: ``[4]`` (x0, y0, x1, y1) image pixels, centre of the top-left pixel at (0, 0).
      score: detector confidence in [0, 1] (dlib: its detection score, not a probability).
      landmarks68: ``[68, 2]`` iBUG-68 points, same pixels.
      landmarks478: ``[478, 3]`` (or ``[468, 3]`` without iris) MediaPipe mesh, x/y pixels and
        relative depth z in pixels (smaller = nearer); None for dlib.
      backend: ``"mediapipe"`` or ``"dlib"``.
    """

    box: np.ndarray
    score: float
    landmarks68: np.ndarray
    landmarks478: np.ndarray | None
    backend: str


@dataclasses.dataclass(frozen=True)
class ImageFaces:
    """Result for one file of a batch; ``faces`` is empty when no face was found."""

    path: str
    faces: list[FaceLandmarks]
    image_size: tuple[int, int]  # (height, width)

    @property
    def status(self) -> Status:
        return Status.OK if self.faces else Status.NO_FACE


@dataclasses.dataclass(frozen=True)
class ImageError:
    """A file of a batch that could not be processed; ``message`` is one line naming the path
    and the reason; ``status`` is ``UNREADABLE`` (missing, corrupt or not an image) or
    ``FAILED`` (detection raised)."""

    path: str
    message: str
    status: Status = Status.UNREADABLE
