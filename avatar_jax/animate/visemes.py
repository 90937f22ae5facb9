"""Phones -> mouth poses in ARKit weights, blended with coarticulation.

Each phone has a target pose (a few ARKit weights, the rest 0) and a dominance: how strongly it
holds the lips against its neighbours (Cohen & Massaro's model of coarticulation). At time t the
pose is the dominance-weighted mean of the nearby phones' targets, each phone's dominance falling
off as a Gaussian around its centre. Bilabials (/p b m/) dominate strongly, so the lips close
between two open vowels; alveolars and velars barely constrain the lips and take their shape from
the vowels around them, as in real speech. The result is a smooth curve, not held mouth shapes.
"""

from __future__ import annotations

import numpy as np

from avatar_jax.model.arkit import ARKIT_NAMES

# viseme -> (pose, dominance). Poses are ARKit weights; mouthClose is ARKit's lip-closing corrective
# for an open jaw, so the lip opening is about jawOpen - mouthClose.
VISEMES: dict[str, tuple[dict[str, float], float]] = {
    "rest": ({}, 0.6),
    "closed": ({"mouthPressLeft": 0.3, "mouthPressRight": 0.3, "mouthRollLower": 0.1, "mouthRollUpper": 0.1}, 4.0),
    "labiodental": ({"jawOpen": 0.08, "mouthRollLower": 0.55, "mouthUpperUpLeft": 0.2, "mouthUpperUpRight": 0.2},
                    2.0),
    "dental": ({"jawOpen": 0.14, "mouthStretchLeft": 0.1, "mouthStretchRight": 0.1, "tongueOut": 0.3}, 0.8),
    "alveolar": ({"jawOpen": 0.12, "mouthStretchLeft": 0.12, "mouthStretchRight": 0.12}, 0.5),
    "postalveolar": ({"jawOpen": 0.14, "mouthFunnel": 0.5, "mouthPucker": 0.25}, 1.2),
    "velar": ({"jawOpen": 0.2}, 0.4),
    "r": ({"jawOpen": 0.12, "mouthPucker": 0.35, "mouthFunnel": 0.2}, 0.9),
    "w": ({"jawOpen": 0.05, "mouthPucker": 0.85, "mouthFunnel": 0.3}, 1.5),
    "open": ({"jawOpen": 0.6}, 1.0),
    "mid": ({"jawOpen": 0.4, "mouthStretchLeft": 0.15, "mouthStretchRight": 0.15}, 1.0),
    "spread": ({"jawOpen": 0.2, "mouthSmileLeft": 0.35, "mouthSmileRight": 0.35, "mouthStretchLeft": 0.35,
                "mouthStretchRight": 0.35}, 1.0),
    "rounded": ({"jawOpen": 0.35, "mouthFunnel": 0.6, "mouthPucker": 0.3}, 1.0),
    "closed_round": ({"jawOpen": 0.12, "mouthPucker": 0.8, "mouthFunnel": 0.4}, 1.0),
}

# ARPAbet phone (pocketsphinx's set) -> viseme
PHONE_VISEMES = {
    **dict.fromkeys(["P", "B", "M"], "closed"),
    **dict.fromkeys(["F", "V"], "labiodental"),
    **dict.fromkeys(["TH", "DH"], "dental"),
    **dict.fromkeys(["T", "D", "N", "L", "S", "Z"], "alveolar"),
    **dict.fromkeys(["CH", "JH", "SH", "ZH"], "postalveolar"),
    **dict.fromkeys(["K", "G", "NG", "HH", "Y"], "velar"),
    "R": "r", "ER": "r", "W": "w",
    **dict.fromkeys(["AA", "AY", "AW"], "open"),
    **dict.fromkeys(["AE", "AH", "EH"], "mid"),
    **dict.fromkeys(["IY", "IH", "EY"], "spread"),
    **dict.fromkeys(["AO", "OW", "OY"], "rounded"),
    **dict.fromkeys(["UW", "UH"], "closed_round"),
    "SIL": "rest",
}

MIN_SPREAD_S = 0.035  # a phone's dominance sigma is at least this, and half its duration


def pose_vector(pose: dict[str, float]) -> np.ndarray:
    """``{ARKit name: weight}`` -> ``[52]`` in :data:`ARKIT_NAMES` order."""
    out = np.zeros(len(ARKIT_NAMES), np.float32)
    for name, value in pose.items():
        out[ARKIT_NAMES.index(name)] = value
    return out


ARKIT_INDEX = {name: i for i, name in enumerate(ARKIT_NAMES)}
_POSES = {v: pose_vector(p) for v, (p, _) in VISEMES.items()}


def viseme_of(phone: str) -> str | None:
    """The viseme of an ARPAbet phone (stress digits ignored); None for noise / unknown."""
    return PHONE_VISEMES.get(phone.rstrip("012"))


def coarticulated(segments, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mouth poses ``[T, 52]`` at ``times [T]`` (s) from phone segments, and ``[T]`` the share of
    each time's dominance from recognised phones (0 where only noise / unknown phones are near:
    the caller falls back to the acoustic features there)."""
    times = np.asarray(times, np.float64)
    num = np.zeros((len(times), len(ARKIT_NAMES)))
    den = np.full(len(times), 1e-6)
    for seg in segments:
        vis = viseme_of(seg.phone)
        if vis is None:
            continue
        centre, half = 0.5 * (seg.start + seg.end), 0.5 * (seg.end - seg.start)
        sigma = max(MIN_SPREAD_S, 0.5 * (seg.end - seg.start))
        dist = np.maximum(np.abs(times - centre) - 0.5 * half, 0.0)  # flat top over the phone's middle
        dom = VISEMES[vis][1] * np.exp(-0.5 * (dist / sigma) ** 2)
        num += dom[:, None] * _POSES[vis]
        den += dom
    coverage = np.clip(den / 0.3, 0.0, 1.0)
    return (num / den[:, None]).astype(np.float32), coverage.astype(np.float32)
