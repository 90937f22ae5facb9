"""LightCNN-29 v2 in Flax: the converter's layouts against a forward pass in PyTorch's own layout
(NCHW, OIHW kernels, channels-first flatten), on random weights (the real ones cannot be shipped)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.regress import lightcnn as lc


def _random_state_dict(seed=0) -> dict:
    """A state_dict with the authors' key names and shapes (DataParallel prefix included)."""
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(path, cin, cout, k):
        sd[f"module.{path}.weight"] = rng.normal(0, (2.0 / (cin * k * k)) ** 0.5, (2 * cout, cin, k, k))
        sd[f"module.{path}.bias"] = rng.normal(0, 0.05, 2 * cout)

    conv("conv1.filter", 1, 48, 5)
    cin = 48
    for stage, (blocks, width) in enumerate(zip(lc.BLOCKS, lc.WIDTHS[1:]), start=1):
        for k in range(blocks):
            conv(f"block{stage}.{k}.conv1.filter", cin, cin, 3)
            conv(f"block{stage}.{k}.conv2.filter", cin, cin, 3)
        conv(f"group{stage}.conv_a.filter", cin, cin, 1)
        conv(f"group{stage}.conv.filter", cin, width, 3)
        cin = width
    sd["module.fc.weight"] = rng.normal(0, (1.0 / 8192) ** 0.5, (256, 8 * 8 * 128))
    sd["module.fc.bias"] = rng.normal(0, 0.05, 256)
    sd["module.fc2.weight"] = rng.normal(0, 0.01, (10, 256))  # the classifier: ignored
    return {k: v.astype(np.float32) for k, v in sd.items()}


def _torch_layout_forward(sd, x):
    """The network in PyTorch's layout from the raw state_dict: ``x`` ``[B, 1, 128, 128]``."""
    w = {k.removeprefix("module."): jnp.asarray(v) for k, v in sd.items()}

    def mfm(path, x):
        kernel = w[f"{path}.weight"]
        pad = kernel.shape[-1] // 2
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), [(pad, pad)] * 2,
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                         precision=jax.lax.Precision.HIGHEST) + w[f"{path}.bias"][None, :, None, None]
        half = y.shape[1] // 2
        return jnp.maximum(y[:, :half], y[:, half:])

    def pool(x):
        b, c, h, ww = x.shape
        blocks = x.reshape(b, c, h // 2, 2, ww // 2, 2)
        return blocks.max((3, 5)) + blocks.mean((3, 5))

    x = pool(mfm("conv1.filter", x))
    for stage, blocks in enumerate(lc.BLOCKS, start=1):
        for k in range(blocks):
            x = x + mfm(f"block{stage}.{k}.conv2.filter", mfm(f"block{stage}.{k}.conv1.filter", x))
        x = mfm(f"group{stage}.conv.filter", mfm(f"group{stage}.conv_a.filter", x))
        x = x if stage == 3 else pool(x)
    x = x.reshape(x.shape[0], -1)
    return jnp.dot(x, w["fc.weight"].T, precision=jax.lax.Precision.HIGHEST) + w["fc.bias"]


def test_converted_weights_give_the_pytorch_layout_forward():
    sd = _random_state_dict()
    params = lc.convert_state_dict(sd)
    gray = np.random.default_rng(1).uniform(0, 1, (2, lc.INPUT_SIZE, lc.INPUT_SIZE)).astype(np.float32)
    ours = np.asarray(lc.lightcnn_features(params, gray))
    reference = np.asarray(_torch_layout_forward(sd, jnp.asarray(gray)[:, None]))
    assert ours.shape == (2, lc.EMBEDDING)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    assert np.abs(ours[0] - ours[1]).max() > 1e-3  # the two inputs differ


def test_a_wrong_state_dict_is_named():
    sd = _random_state_dict()
    broken = dict(sd)
    del broken["module.group2.conv.filter.bias"]
    with pytest.raises(ValueError, match="group2.conv.filter"):
        lc.convert_state_dict(broken)
    with pytest.raises(ValueError, match="unknown keys"):
        lc.convert_state_dict({**sd, "module.extra.weight": np.zeros(3)})
    wrong = dict(sd)
    wrong["module.fc.weight"] = np.zeros((256, 100), np.float32)
    with pytest.raises(ValueError, match="fc has shape"):
        lc.convert_state_dict(wrong)
