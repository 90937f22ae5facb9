"""LightCNN-29 v2 (Wu et al., "A Light CNN for Deep Face Representation with Noisy Labels"), the
paper's face-recognition encoder, in Flax, for users who own its weights.

The weights (``LightCNN_29Layers_V2_checkpoint.pth.tar``) cannot be obtained or redistributed
here, so nothing is shipped and no encoder of the pipeline uses this module by default; the
dlib ResNet (:mod:`avatar_jax.regress.dlib_resnet`) is the shipped encoder.

    params = load_lightcnn_checkpoint("LightCNN_29Layers_V2_checkpoint.pth.tar")  # needs torch
    features = lightcnn_features(params, gray128)   # [B, 128, 128] float in [0, 1] -> [B, 256]

Architecture (the authors' ``network_29layers_v2``): every convolution is a max-feature-map
(MFM) unit (a convolution to twice the width, then the element-wise max of its two halves);
conv 5x5 (48) -> pool -> 1 residual block (48) -> group (1x1 then 3x3 MFM, 96) -> pool ->
2 blocks (96) -> group (192) -> pool -> 3 blocks (192) -> group (128) -> 4 blocks (128) ->
group (128) -> pool -> FC 8*8*128 -> 256 (the embedding). Each pool is a 2x2 max pool plus a 2x2
average pool. Input: one 128x128 grey channel in [0, 1], the authors' aligned crop.
"""

from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INPUT_SIZE = 128
EMBEDDING = 256
BLOCKS = (1, 2, 3, 4)
WIDTHS = (48, 96, 192, 128, 128)  # the stem, then each group's output


class MFM(nn.Module):
    """A convolution to ``2 * features`` channels, then the max of the two halves (NHWC)."""

    features: int
    kernel: int = 3

    @nn.compact
    def __call__(self, x):
        pad = self.kernel // 2
        y = nn.Conv(2 * self.features, (self.kernel,) * 2, padding=((pad, pad), (pad, pad)), name="filter",
                    precision=jax.lax.Precision.HIGHEST)(x)
        return jnp.maximum(y[..., :self.features], y[..., self.features:])


class ResBlock(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        return x + MFM(self.features, name="conv2")(MFM(self.features, name="conv1")(x))


class Group(nn.Module):
    """A 1x1 MFM keeping the width, then a 3x3 MFM to ``features``."""

    features: int

    @nn.compact
    def __call__(self, x):
        return MFM(self.features, name="conv")(MFM(x.shape[-1], 1, name="conv_a")(x))


def pool(x):
    """2x2 max pool plus 2x2 average pool, stride 2 (NHWC)."""
    return nn.max_pool(x, (2, 2), (2, 2)) + nn.avg_pool(x, (2, 2), (2, 2))


class LightCNN29v2(nn.Module):
    """``[B, 128, 128, 1]`` grey in [0, 1] -> ``[B, 256]`` embedding (the authors' ``fc`` output)."""

    @nn.compact
    def __call__(self, x):
        x = pool(MFM(WIDTHS[0], 5, name="conv1")(x))
        for stage, (blocks, width) in enumerate(zip(BLOCKS, WIDTHS[1:]), start=1):
            for k in range(blocks):
                x = ResBlock(x.shape[-1], name=f"block{stage}_{k}")(x)
            x = Group(width, name=f"group{stage}")(x)
            if stage != 3:  # no pool between the third and the fourth stage
                x = pool(x)
        # The authors flatten channels-first: (C, H, W) order for the FC weights.
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        return nn.Dense(EMBEDDING, name="fc", precision=jax.lax.Precision.HIGHEST)(x)


def _torch_modules() -> list[tuple[str, str]]:
    """(PyTorch module path, Flax module path) of every weighted layer, in order."""
    pairs = [("conv1.filter", "conv1/filter")]
    for stage, blocks in enumerate(BLOCKS, start=1):
        for k in range(blocks):
            for conv in ("conv1", "conv2"):
                pairs.append((f"block{stage}.{k}.{conv}.filter", f"block{stage}_{k}/{conv}/filter"))
        for conv in ("conv_a", "conv"):
            pairs.append((f"group{stage}.{conv}.filter", f"group{stage}/{conv}/filter"))
    return pairs + [("fc", "fc")]


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict:
    """Flax params of :class:`LightCNN29v2` from the authors' PyTorch ``state_dict`` (arrays; a
    ``module.`` prefix from ``DataParallel`` is dropped; the classifier ``fc2`` is ignored).

    Convolutions ``[O, I, kh, kw]`` become ``[kh, kw, I, O]``, linear ``[out, in]`` ``[in, out]``.

    Raises:
      ValueError: a weighted layer is missing, has the wrong shape, or an unknown key is left.
    """
    from flax.traverse_util import flatten_dict, unflatten_dict

    sd = {k.removeprefix("module."): np.asarray(v, np.float32) for k, v in state_dict.items()}
    shapes = jax.eval_shape(LightCNN29v2().init, jax.random.PRNGKey(0), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 1)))
    expected = flatten_dict(shapes["params"], sep="/")
    flat = {}
    for torch_path, flax_path in _torch_modules():
        w, b = sd.pop(f"{torch_path}.weight", None), sd.pop(f"{torch_path}.bias", None)
        if w is None or b is None:
            raise ValueError(f"LightCNN state_dict: missing {torch_path}.weight or .bias")
        kernel = np.transpose(w, (2, 3, 1, 0)) if w.ndim == 4 else w.T
        want = expected[f"{flax_path}/kernel"].shape
        if kernel.shape != want or b.shape != expected[f"{flax_path}/bias"].shape:
            raise ValueError(f"LightCNN state_dict: {torch_path} has shape {w.shape}, expected {want} (Flax layout)")
        flat[f"{flax_path}/kernel"], flat[f"{flax_path}/bias"] = kernel, b
    left = [k for k in sd if not k.startswith("fc2.")]
    if left:
        raise ValueError(f"LightCNN state_dict: unknown keys {left[:5]}")
    return {"params": jax.tree_util.tree_map(jnp.asarray, unflatten_dict(flat, sep="/"))}


def load_lightcnn_checkpoint(path) -> dict:
    """Flax params from the authors' ``.pth.tar`` checkpoint (needs ``torch`` installed)."""
    try:
        import torch
    except ImportError as err:
        raise ImportError("load_lightcnn_checkpoint needs torch to read the .pth.tar; or pass the state_dict's "
                          "arrays to convert_state_dict") from err
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint)
    return convert_state_dict({k: v.numpy() for k, v in state.items()})


@jax.jit
def lightcnn_features(params, gray) -> jax.Array:
    """``[B, 256]`` embeddings of aligned grey crops ``[B, 128, 128]`` float in [0, 1]."""
    return LightCNN29v2().apply(params, jnp.asarray(gray, jnp.float32)[..., None])
