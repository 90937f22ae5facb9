"""dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1``) in Flax.

A 150x150 RGB face chip, aligned from five landmarks, maps to a 128-D descriptor; two faces
whose descriptors are closer than 0.6 (Euclidean) are the same person by dlib's convention.
The descriptors are not unit length.

Pieces, each usable alone:

- ``read_dlib_resnet``: numpy reader of dlib's ``.dat`` serialisation of this network.
- ``DlibResNet``: the network as a ``flax.linen`` module (NHWC, float32).
- ``load_dlib_resnet``: the packaged converted weights (or a ``.dat``) as a params pytree.
- ``normalise_chip`` / ``face_descriptor``: uint8 chips to descriptors, jitted.
- ``align_chip``: dlib's 5-point chip alignment (``get_face_chip``) in numpy, so dlib is
  not needed at run time; ``points5_from_ibug68`` gives those five points from iBUG-68.

The network, from dlib's ``dnn_face_recognition_ex.cpp``: conv 7x7/2 (32) -> affine -> ReLU
-> max-pool 3x3/2; 14 residual blocks of ``conv3x3 -> affine -> ReLU -> conv3x3 -> affine``
plus the skip, then ReLU (widths 3x32, 4x64, 3x128, 3x256, 1x256; each new width and the last
block downsample: stride-2 first conv, skip = 2x2/2 average pool); global mean; FC 256->128
without bias. dlib's "affine" layer is batch norm folded to a per-channel scale and shift.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

CHIP_SIZE = 150
CHIP_PADDING = 0.25
# dlib's input_rgb_image_sized<150> subtracts these and divides by 256; the .dat file stores
# the same values (checked by read_dlib_resnet).
MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_SCALE = 256.0

DATA_DIR = Path(__file__).resolve().parent / "data"
PACKAGED_WEIGHTS = DATA_DIR / "dlib_resnet_v1.npz"

# (width, downsample) of the 14 residual blocks, input to output.
BLOCKS: tuple[tuple[int, bool], ...] = (
    ((32, False),) * 3
    + ((64, True),) + ((64, False),) * 3
    + ((128, True),) + ((128, False),) * 2
    + ((256, True),) + ((256, False),) * 2
    + ((256, True),))

_HIGHEST = jax.lax.Precision.HIGHEST


# ---------------------------------------------------------------------------------------
# Reader of dlib's serialisation
# ---------------------------------------------------------------------------------------

class _Stream:
    """Cursor over the bytes of a dlib file; every read checks bounds and names the offset."""

    def __init__(self, buf: bytes, path: str):
        self.buf, self.path, self.pos = buf, path, 0

    def fail(self, problem: str, at: int | None = None):
        at = self.pos if at is None else at
        raise ValueError(f"{self.path}: {problem} at byte offset {at} (file has {len(self.buf)} bytes)")

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.buf):
            self.fail(f"truncated dlib file: {what} needs {n} bytes, {len(self.buf) - self.pos} left")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self, what: str = "integer") -> int:
        # dlib packs integers as a control byte (low nibble: byte count, 0x80: negative)
        # followed by that many little-endian magnitude bytes.
        at = self.pos
        control = self.take(1, what)[0]
        size = control & 0x0F
        if control & 0x70 or size > 8:
            self.fail(f"bad integer control byte 0x{control:02x} for {what}", at)
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def float(self, what: str = "float") -> float:
        # dlib writes a double as integer mantissa and base-2 exponent.
        mantissa = self.int(what + " mantissa")
        exponent = self.int(what + " exponent")
        return float(np.ldexp(float(mantissa), exponent))

    def string(self, what: str = "string") -> str:
        n = self.int(what + " length")
        return self.take(n, what).decode("latin-1")

    def bool(self, what: str = "bool") -> bool:
        at = self.pos
        c = self.take(1, what)
        if c not in (b"0", b"1"):
            self.fail(f"bad bool byte {c!r} for {what}", at)
        return c == b"1"

    def tensor(self, what: str = "tensor") -> tuple[tuple[int, ...], np.ndarray | None]:
        """(n, k, nr, nc) and the float32 data (version 2), or the shape alone (version 1 alias)."""
        at = self.pos
        version = self.int(what + " version")
        shape = tuple(self.int(what + " dims") for _ in range(4))
        if version == 1:
            return shape, None
        if version != 2:
            self.fail(f"unknown tensor version {version} for {what}", at)
        if min(shape) < 0:
            self.fail(f"negative tensor shape {shape} for {what}", at)
        n = int(np.prod(shape))
        data = np.frombuffer(self.take(4 * n, what + " data"), "<f4").astype(np.float32)
        return shape, data


class _Layer(NamedTuple):
    kind: str  # dlib's type string, or "tag/skip" for the parameterless routing layers
    offset: int  # byte offset of the layer's details
    fields: dict[str, Any]


def _read_details(s: _Stream) -> _Layer:
    at = s.pos
    kind = s.string("layer type")
    f: dict[str, Any] = {}
    if kind == "con_4":
        f["params"] = s.tensor("con_ params")[1]
        for key in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"):
            f[key] = s.int("con_ " + key)
        s.tensor("con_ filters alias")
        s.tensor("con_ biases alias")
        for _ in range(4):
            s.float("con_ learning-rate multiplier")
    elif kind == "affine_":
        f["params"] = s.tensor("affine_ params")[1]
        s.tensor("affine_ gamma alias")
        s.tensor("affine_ beta alias")
        f["mode"] = s.int("affine_ mode")
    elif kind in ("max_pool_2", "avg_pool_2"):
        for key in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"):
            f[key] = s.int(kind + " " + key)
    elif kind == "fc_2":
        f["num_outputs"] = s.int("fc_ num_outputs")
        f["num_inputs"] = s.int("fc_ num_inputs")
        f["params"] = s.tensor("fc_ params")[1]
        s.tensor("fc_ weights alias")
        s.tensor("fc_ biases alias")
        f["bias_mode"] = s.int("fc_ bias mode")
        for _ in range(4):
            s.float("fc_ learning-rate multiplier")
    elif kind not in ("relu_", "add_prev_"):
        s.fail(f"unexpected layer type {kind!r}", at)
    return _Layer(kind, at, f)


def _read_layer_state(s: _Stream) -> None:
    # add_layer's own state after the details: 3 bools, then empty x_grad / cached_output /
    # params_grad tensors (a saved, cleaned net).
    for _ in range(3):
        s.bool("add_layer flag")
    for _ in range(3):
        s.tensor("add_layer state tensor")


def _parse_dlib_net(buf: bytes, path: str) -> tuple[dict[str, Any], list[_Layer]]:
    """Input-layer settings and the layers, input to output, of a ``loss_metric`` net."""
    s = _Stream(buf, path)
    if (v := s.int("loss layer version")) != 1:
        s.fail(f"not a dlib loss layer (version {v})", 0)
    at = s.pos
    if (loss := s.string("loss type")) != "loss_metric_2":
        s.fail(f"expected a loss_metric_2 network, found {loss!r}", at)
    s.float("loss margin")
    s.float("loss distance threshold")
    # Layers nest from the output inwards: a run of add_layer (version 2) and tag/skip
    # (version 1) headers, ended by the add_layer that holds the input layer (version 3).
    headers = []
    while True:
        at = s.pos
        v = s.int("layer version")
        if v == 3:
            break
        if v not in (1, 2):
            s.fail(f"unexpected layer version {v}", at)
        headers.append(v)
    at = s.pos
    if (kind := s.string("input layer type")) != "input_rgb_image_sized":
        s.fail(f"expected input_rgb_image_sized, found {kind!r}", at)
    inp = {"mean_rgb": tuple(s.float("input mean") for _ in range(3)),
           "rows": s.int("input rows"), "cols": s.int("input cols")}
    # Then each layer's details, from the input outwards.
    layers = [_read_details(s)]
    _read_layer_state(s)
    s.int("sample expansion factor")
    for v in reversed(headers):
        if v == 1:
            layers.append(_Layer("tag/skip", s.pos, {}))
        else:
            layers.append(_read_details(s))
            _read_layer_state(s)
    if s.pos != len(buf):
        s.fail(f"{len(buf) - s.pos} unexpected trailing bytes")
    return inp, layers


def _expected_layers() -> list[tuple[str, dict[str, int]]]:
    """(type, settings) of every layer of dlib's face net, input to output."""
    def con(n, k, stride):
        pad = 0 if stride != 1 else k // 2  # dlib's con_ default padding
        return ("con_4", {"num_filters": n, "nr": k, "nc": k, "stride_y": stride,
                          "stride_x": stride, "padding_y": pad, "padding_x": pad})

    def pool(kind, k, stride):
        return (kind, {"nr": k, "nc": k, "stride_y": stride, "stride_x": stride,
                       "padding_y": 0, "padding_x": 0})

    tag, affine, relu = ("tag/skip", {}), ("affine_", {"mode": 0}), ("relu_", {})
    out = [con(32, 7, 2), affine, relu, pool("max_pool_2", 3, 2)]
    for width, down in BLOCKS:
        stride = 2 if down else 1
        out += [tag, con(width, 3, stride), affine, relu, con(width, 3, 1), affine]
        if down:  # tag2 on the block output, skip1 back to the input, then pool it
            out += [tag, tag, pool("avg_pool_2", 2, 2)]
        out += [("add_prev_", {}), relu]
    out += [pool("avg_pool_2", 0, 1), ("fc_2", {"num_outputs": 128, "num_inputs": 256, "bias_mode": 1})]
    return out


def _param_names() -> list[tuple[str, str]]:
    """(Flax module path, dlib layer type) of each layer with parameters, input to output."""
    names = [("conv0", "con_4"), ("affine0", "affine_")]
    for i in range(len(BLOCKS)):
        b = f"block{i:02d}"
        names += [(f"{b}/conv_a", "con_4"), (f"{b}/affine_a", "affine_"),
                  (f"{b}/conv_b", "con_4"), (f"{b}/affine_b", "affine_")]
    return names + [("fc", "fc_2")]


def read_dlib_resnet(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Parameters of dlib's ResNet face model from its ``.dat`` file, as Flax-layout arrays.

    Returns a flat dict keyed by Flax parameter path (``"conv0/kernel"``,
    ``"block03/affine_b/scale"``, ``"fc/kernel"``, ...): conv kernels ``[kh, kw, in, out]``
    (HWIO) and biases ``[out]``, affine ``scale`` / ``shift`` ``[C]``, FC kernel ``[256, 128]``;
    all float32. ``unflatten_params`` turns it into the ``DlibResNet`` params pytree.

    Raises ``ValueError`` naming the file and byte offset if the file is truncated or
    malformed, or if it holds a network other than dlib's face descriptor.
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:
        buf = fh.read()
    inp, layers = _parse_dlib_net(buf, path)
    if (inp["rows"], inp["cols"]) != (CHIP_SIZE, CHIP_SIZE) or not np.allclose(
            inp["mean_rgb"], MEAN_RGB, rtol=0, atol=1e-4):
        raise ValueError(f"{path}: input layer is {inp}, expected {CHIP_SIZE}x{CHIP_SIZE} "
                         f"chips with mean {MEAN_RGB}")
    expected = _expected_layers()
    if len(layers) != len(expected):
        raise ValueError(f"{path}: {len(layers)} layers, dlib's face ResNet has {len(expected)}")
    for layer, (kind, settings) in zip(layers, expected):
        got = {k: layer.fields.get(k) for k in settings}
        if layer.kind != kind or got != settings:
            raise ValueError(f"{path}: layer at byte offset {layer.offset} is {layer.kind} {got}, "
                             f"expected {kind} {settings}")

    out: dict[str, np.ndarray] = {}
    with_params = [layer for layer in layers if "params" in layer.fields]
    in_channels = 3
    for (name, kind), layer in zip(_param_names(), with_params, strict=True):
        assert layer.kind == kind, (name, layer.kind)  # guaranteed by the sequence check
        p, f = layer.fields["params"], layer.fields
        if kind == "con_4":
            n, kh, kw = f["num_filters"], f["nr"], f["nc"]
            if p.size != n * in_channels * kh * kw + n:
                raise ValueError(f"{path}: con_ at byte offset {layer.offset} has {p.size} "
                                 f"parameters, expected {n * in_channels * kh * kw + n}")
            # dlib filters are [out, in, rows, cols] followed by one bias per filter.
            w = p[:-n].reshape(n, in_channels, kh, kw)
            out[f"{name}/kernel"] = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
            out[f"{name}/bias"] = p[-n:].copy()
            in_channels = n
        elif kind == "affine_":
            if p.size != 2 * in_channels:
                raise ValueError(f"{path}: affine_ at byte offset {layer.offset} has {p.size} "
                                 f"parameters, expected {2 * in_channels}")
            out[f"{name}/scale"], out[f"{name}/shift"] = p[:in_channels].copy(), p[in_channels:].copy()
        else:  # fc_2 without bias: weights [num_inputs, num_outputs], y = x @ W
            ni, no = f["num_inputs"], f["num_outputs"]
            if p.size != ni * no:
                raise ValueError(f"{path}: fc_ at byte offset {layer.offset} has {p.size} "
                                 f"parameters, expected {ni * no}")
            out[f"{name}/kernel"] = p.reshape(ni, no).copy()
    return out


def unflatten_params(flat: dict[str, np.ndarray], dtype=jnp.float32) -> dict:
    """``{"conv0/kernel": a, ...}`` -> ``{"params": {"conv0": {"kernel": a}, ...}}`` as ``dtype``."""
    tree: dict = {}
    for key, value in flat.items():
        *path, leaf = key.split("/")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = jnp.asarray(value, dtype)
    return {"params": tree}


def count_params(params) -> int:
    """Number of scalars in a params pytree (or a flat dict of arrays)."""
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


# ---------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------

class Affine(nn.Module):
    """dlib's ``affine_`` (folded batch norm): ``x * scale + shift`` per channel, ``[..., C]``."""

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        shift = self.param("shift", nn.initializers.zeros, (c,), jnp.float32)
        return x * scale + shift


def _conv(features: int, kernel: int, stride: int, name: str) -> nn.Conv:
    # dlib's con_ pads (k-1)/2 at stride 1 and not at all otherwise.
    pad = kernel // 2 if stride == 1 else 0
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), precision=_HIGHEST, name=name)


def add_zero_padded(a: jax.Array, b: jax.Array) -> jax.Array:
    """dlib's ``add_prev_``: ``a + b`` ``[B, H, W, C]`` where the smaller is zero-padded at
    the bottom / right / last channels to the larger's size (shapes are static)."""
    shape = tuple(max(p, q) for p, q in zip(a.shape, b.shape))

    def pad(x):
        return jnp.pad(x, [(0, s - d) for s, d in zip(shape, x.shape)])

    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """``relu(affine(conv(relu(affine(conv(x))))) + skip(x))``, ``[B, H, W, C] -> [B, H', W', width]``.

    With ``down``, the first conv has stride 2 (no padding) and the skip is a 2x2 stride-2
    average pool; sizes that then differ (channels, or an odd height / width) are zero-padded
    as dlib does.
    """
    width: int
    down: bool

    @nn.compact
    def __call__(self, x):
        y = _conv(self.width, 3, 2 if self.down else 1, "conv_a")(x)
        y = nn.relu(Affine(name="affine_a")(y))
        y = Affine(name="affine_b")(_conv(self.width, 3, 1, "conv_b")(y))
        skip = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID") if self.down else x
        return nn.relu(add_zero_padded(y, skip))


class DlibResNet(nn.Module):
    """dlib's face descriptor network: ``[B, 150, 150, 3]`` normalised float32 chips -> ``[B, 128]``.

    Inputs as ``normalise_chip`` makes them (RGB, ``(x - MEAN_RGB) / 256``). Outputs are dlib's
    descriptors, not unit length.
    """

    @nn.compact
    def __call__(self, chips):
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"DlibResNet wants chips [B, {CHIP_SIZE}, {CHIP_SIZE}, 3], got {chips.shape}")
        x = _conv(32, 7, 2, "conv0")(chips)
        x = nn.relu(Affine(name="affine0")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
        for i, (width, down) in enumerate(BLOCKS):
            x = ResidualBlock(width, down, name=f"block{i:02d}")(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(128, use_bias=False, precision=_HIGHEST, name="fc")(x)


_MODEL = DlibResNet()


@functools.lru_cache(maxsize=4)
def _load_cached(path: str) -> dict:
    if path.endswith(".dat"):
        return unflatten_params(read_dlib_resnet(path))
    with np.load(path) as z:
        return unflatten_params({k: z[k] for k in z.files})


def load_dlib_resnet(path: str | os.PathLike | None = None) -> dict:
    """``DlibResNet`` params pytree ``{"params": ...}`` in float32.

    ``path``: the packaged converted weights by default (``data/dlib_resnet_v1.npz``, stored
    as float16 or float32 and cast up here), another ``.npz`` of the same flat layout, or
    dlib's original ``.dat`` (read with ``read_dlib_resnet``). Cached per path.
    """
    path = os.fspath(PACKAGED_WEIGHTS if path is None else path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"dlib ResNet weights not found: {path}"
                                + (" (rebuild with tools/convert_dlib_resnet.py)"
                                   if path == os.fspath(PACKAGED_WEIGHTS) else ""))
    return _load_cached(path)


def normalise_chip(chips) -> jax.Array:
    """uint8 RGB chips ``[..., 150, 150, 3]`` -> float32 ``(x - MEAN_RGB) / 256``, same shape."""
    x = jnp.asarray(chips).astype(jnp.float32)
    return (x - jnp.asarray(MEAN_RGB, jnp.float32)) / INPUT_SCALE


@jax.jit
def face_descriptor(params, chips_uint8) -> jax.Array:
    """128-D dlib descriptors ``[B, 128]`` of uint8 RGB chips ``[B, 150, 150, 3]`` (jitted)."""
    return _MODEL.apply(params, normalise_chip(chips_uint8))


# ---------------------------------------------------------------------------------------
# Chip alignment (dlib's get_face_chip_details + extract_image_chip)
# ---------------------------------------------------------------------------------------

# dlib's 5-point template in the unit square: (right eye outer, right eye inner, left eye
# outer, left eye inner, under the nose), "right" being the image's right.
_TEMPLATE5 = np.array([[0.8595674595992, 0.2134981538014],
                       [0.6460604764104, 0.2289674387677],
                       [0.1205750620789, 0.2137274526848],
                       [0.3340850613712, 0.2290642403242],
                       [0.4901123135679, 0.6277975316475]])

# iBUG-68 indices matching dlib's 5 points, in dlib's order.
IBUG68_TO_POINTS5 = (45, 42, 36, 39, 33)


def points5_from_ibug68(landmarks68) -> np.ndarray:
    """dlib-ordered 5 points ``[5, 2]`` (x, y) from iBUG-68 landmarks ``[68, 2]``.

    dlib's 5-point model marks the two corners of each eye and the point under the nose; the
    iBUG points 45, 42 (image-right eye, outer / inner), 36, 39 (image-left eye) and 33
    (nose base) are the same anatomical points but were annotated by a different convention,
    so chips from them are close to, not identical with, dlib's.
    """
    lm = np.asarray(landmarks68, np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"points5_from_ibug68 wants landmarks [68, 2], got {lm.shape}")
    return lm[list(IBUG68_TO_POINTS5)]


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ M @ src + t`` (Umeyama, as dlib's
    ``find_similarity_transform``); ``src``, ``dst`` ``[N, 2]`` -> ``M [2, 2]``, ``t [2]``."""
    mean_s, mean_d = src.mean(0), dst.mean(0)
    ds, dd = src - mean_s, dst - mean_d
    sigma_s = (ds ** 2).sum(1).mean()
    cov = dd.T @ ds / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.ones(2)
    if np.linalg.det(cov) < 0 or (np.linalg.det(cov) == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        s[1 if d[1] < d[0] else 0] = -1
    r = u @ np.diag(s) @ vt
    c = (d * s).sum() / sigma_s if sigma_s != 0 else 1.0
    return c * r, mean_d - c * r @ mean_s


class ChipDetails(NamedTuple):
    """dlib's ``chip_details``: the chip's rectangle in the image ``(l, t, r, b)`` before
    rotation by ``angle`` (radians) about its centre, and the chip size."""
    rect: tuple[float, float, float, float]
    angle: float
    rows: int
    cols: int


def face_chip_details(points5, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> ChipDetails:
    """dlib's ``get_face_chip_details`` for 5 points ``[5, 2]`` (x, y, image pixels)."""
    pts = np.asarray(points5, np.float64)
    if pts.shape != (5, 2):
        raise ValueError(f"face_chip_details wants 5 points [5, 2], got {pts.shape}")
    template = (padding + _TEMPLATE5) / (2 * padding + 1) * size
    m, t = _similarity(template, pts)
    p = m @ np.array([1.0, 0.0])
    angle, scale = float(np.arctan2(p[1], p[0])), float(np.hypot(p[0], p[1]))
    cx, cy = m @ np.array([size / 2.0, size / 2.0]) + t
    # dlib's centered_drect: a rectangle of width w spans centre +- (w - 1) / 2.
    hw, hh = (size * scale - 1) / 2, (size * scale - 1) / 2
    return ChipDetails((cx - hw, cy - hh, cx + hw, cy + hh), angle, size, size)


def _rect_area(rect) -> float:
    l, t, r, b = rect
    return 0.0 if (t > b or l > r) else (r - l + 1) * (b - t + 1)


def _rect_down(rect):
    # pyramid_down<2>::rect_down: each corner p -> p / 2 - (1.25, 0.75).
    l, t, r, b = rect
    return (l / 2 - 1.25, t / 2 - 0.75, r / 2 - 1.25, b / 2 - 0.75)


def _pyramid_down2(img: np.ndarray) -> np.ndarray:
    """dlib's ``pyramid_down<2>`` on uint8 ``[H, W, C]``: 5-tap [1 4 6 4 1] filter in integers,
    keep every other pixel -> ``[(H - 3) // 2, (W - 3) // 2, C]`` (truncating division)."""
    h, w = img.shape[:2]
    if h <= 8 or w <= 8:
        return img[:0, :0]
    x = img.astype(np.int32)
    wo, ho = (w - 3) // 2, (h - 3) // 2
    taps = (1, 4, 6, 4, 1)
    rows = sum(k * x[:, j:j + 2 * wo:2] for j, k in enumerate(taps))
    cols = sum(k * rows[j:j + 2 * ho:2] for j, k in enumerate(taps))
    return (cols // 256).astype(np.uint8)


def _bilinear(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """dlib's ``interpolate_bilinear`` + black background: sample uint8 ``[H, W, C]`` at
    ``xy [..., 2]`` -> uint8 ``[..., C]``; samples whose 2x2 footprint leaves the image are 0,
    values truncate toward zero as dlib's ``assign_pixel`` does."""
    h, w = img.shape[:2]
    x, y = xy[..., 0], xy[..., 1]
    left, top = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    inside = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    l0, t0 = np.clip(left, 0, max(w - 2, 0)), np.clip(top, 0, max(h - 2, 0))
    fx, fy = (x - left)[..., None], (y - top)[..., None]
    f = img.astype(np.float64)
    tl, tr = f[t0, l0], f[t0, l0 + 1]
    bl, br = f[t0 + 1, l0], f[t0 + 1, l0 + 1]
    v = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
    v = np.clip(v, 0, 255).astype(np.uint8)
    return np.where(inside[..., None], v, 0).astype(np.uint8)


def _rotate(center, p, angle):
    c, s = np.cos(angle), np.sin(angle)
    d = np.asarray(p, np.float64) - center
    return np.array([c * d[0] - s * d[1], s * d[0] + c * d[1]]) + center


def extract_chip(image: np.ndarray, chip: ChipDetails) -> np.ndarray:
    """dlib's ``extract_image_chip`` (bilinear, with its image pyramid for large downscales):
    uint8 ``[H, W, 3]`` -> ``[rows, cols, 3]``."""
    img = np.asarray(image)
    h, w = img.shape[:2]
    l, t, r, b = chip.rect
    center = np.array([(l + r) / 2, (t + b) / 2])
    corners = [(l, t), (r, t), (l, b), (r, b)]
    # Pyramid depth: halve until the rectangle is no larger than the chip, so bilinear
    # sampling never skips source pixels.
    depth, grow, rect = 0, 2.0, _rect_down(chip.rect)
    while _rect_area(rect) > chip.rows * chip.cols:
        rect, depth, grow = _rect_down(rect), depth + 1, grow * 2 + 2
    rot = np.array([_rotate(center, p, chip.angle) for p in corners])
    box = (max(rot[:, 0].min() - grow, 0), max(rot[:, 1].min() - grow, 0),
           min(rot[:, 0].max() + grow, w - 1), min(rot[:, 1].max() + grow, h - 1))
    # drectangle -> rectangle rounds each side half up.
    bl_, bt, br_, bb = (int(np.floor(v + 0.5)) for v in box)
    src = img[bt:bb + 1, bl_:br_ + 1]
    rect = (l - bl_, t - bt, r - bl_, b - bt)
    level = -1
    while _rect_area(_rect_down(rect)) > chip.rows * chip.cols:
        level, rect = level + 1, _rect_down(rect)
    for _ in range(level + 1):
        src = _pyramid_down2(src)
    l, t, r, b = rect
    center = np.array([(l + r) / 2, (t + b) / 2])
    # Affine map from chip pixel (c, r) to the source: chip corners -> rotated rect corners.
    tl, tr, bl = (_rotate(center, p, chip.angle) for p in [(l, t), (r, t), (l, b)])
    ex = (tr - tl) / max(chip.cols - 1, 1)
    ey = (bl - tl) / max(chip.rows - 1, 1)
    cc, rr = np.meshgrid(np.arange(chip.cols, dtype=np.float64), np.arange(chip.rows, dtype=np.float64))
    xy = tl + cc[..., None] * ex + rr[..., None] * ey
    return _bilinear(src, xy)


def align_chip(image, points5, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """dlib's ``get_face_chip(image, shape5, size, padding)`` without dlib.

    ``image`` uint8 RGB ``[H, W, 3]`` (grey ``[H, W]`` is repeated to RGB), ``points5``
    ``[5, 2]`` (x, y) in dlib's 5-point order (see ``points5_from_ibug68``) -> uint8
    ``[size, size, 3]`` chip.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
        raise ValueError(f"align_chip wants a uint8 RGB image [H, W, 3], got {img.dtype} {img.shape}")
    return extract_chip(img, face_chip_details(points5, size, padding))
