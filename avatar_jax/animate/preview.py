"""The animated avatar as an MP4 preview (our renderer, H.264 through imageio-ffmpeg's bundled
ffmpeg, the speech muxed in as AAC)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar_jax.animate.lipsync import Animation

PREVIEW_SIZE = 320


def target_columns(rig: dict, names) -> list[int]:
    """The rig's morph-target index of each name; ValueError if the rig lacks some (not ARKit-named)."""
    index = {n: i for i, n in enumerate(rig["target_names"])}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"the avatar has no morph targets {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                         "animate needs an ARKit-named .glb (export with --blendshape-names arkit)")
    return [index[n] for n in names]


def rig_frames(rig: dict, animation: Animation) -> np.ndarray:
    """Posed vertices ``[T, N, 3]`` (mm, model frame) of a :func:`~avatar_jax.io.export.read_glb_rig`
    rig under the animation (morph weights by name, head rotation about the model origin, as the
    .glb's node rotation turns it)."""
    from scipy.spatial.transform import Rotation

    targets = rig["targets"][target_columns(rig, animation.names)] * 1000.0
    posed = rig["positions"][None] * 1000.0 + np.einsum("tk,kvd->tvd", animation.weights, targets)
    rot = Rotation.from_rotvec(animation.head_rotation).as_matrix()
    return np.einsum("tij,tvj->tvi", rot, posed).astype(np.float32)


def render_frames(rig: dict, animation: Animation, size: int = PREVIEW_SIZE) -> np.ndarray:
    """``[T, size, size, 3]`` uint8 frames of the animated avatar from the front."""
    import jax.numpy as jnp

    from avatar_jax.geometry.camera import Camera
    from avatar_jax.render.preview import render_mesh

    if rig["texture"] is None or rig["texcoords"] is None:
        raise ValueError("the avatar .glb has no embedded texture or texture coordinates")
    verts = rig_frames(rig, animation)
    camera = Camera(rotvec=jnp.zeros(3), translation=jnp.array([0.0, 10.0, -520.0]), log_fs=jnp.asarray(0.0),
                    focal=jnp.asarray(float(size) * 1.6), principal=jnp.array([size / 2, size / 2]))
    uvs = np.stack([rig["texcoords"][:, 0], 1.0 - rig["texcoords"][:, 1]], 1)
    texture = jnp.asarray(rig["texture"], jnp.float32) / 255.0
    budget = _tile_budget(verts, rig["faces"], camera, size)
    frames = [np.asarray(render_mesh(v, rig["faces"], camera, (size, size), texture=texture, uvs=uvs,
                                     triangle_uvs=rig["faces"], background=(0.16, 0.16, 0.18), max_chunks=budget))
              for v in verts]
    return (np.clip(np.stack(frames), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, audio_path: str | Path | None = None) -> Path:
    """Write ``frames [T, H, W, 3]`` uint8 as H.264 MP4 at ``fps``, with the audio file muxed in (AAC)."""
    import warnings

    import imageio_ffmpeg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = frames.shape
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, codec="libx264", quality=7,
                                         audio_path=None if audio_path is None else str(audio_path),
                                         audio_codec=None if audio_path is None else "aac",
                                         output_params=["-shortest"] if audio_path else None,
                                         ffmpeg_log_level="error")
    with warnings.catch_warnings():
        # ffmpeg runs as a subprocess: fork + exec at once, none of JAX's threads is needed in the child
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def _tile_budget(verts, faces, camera, size) -> int:
    """One rasteriser tile budget for every frame: the most any frame needs (a few frames
    sampled), with headroom, rounded up to a power of two so one compilation serves the clip."""
    import jax.numpy as jnp

    from avatar_jax.geometry.camera import project_view, transform
    from avatar_jax.render.raster import chunk_demand

    demand = 0
    for v in verts[:: max(1, len(verts) // 8)]:
        view = transform(camera, jnp.asarray(v))
        px = jnp.concatenate([project_view(camera, view), -view[:, 2:3]], -1)
        demand = max(demand, int(chunk_demand(px, jnp.asarray(faces, jnp.int32), size, size, False, True, 4)))
    return 1 << int(np.ceil(np.log2(1.25 * demand + 1)))
