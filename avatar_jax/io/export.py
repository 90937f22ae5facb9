"""Mesh + texture export: Wavefront OBJ (+ MTL + PNG) and binary glTF 2.0 (.glb).

Conventions:

* OBJ: written in the model frame, **millimetres, +Y up, +Z forward** (the face looks down
  +Z). Blender's OBJ importer defaults (Forward -Z, Up Y) then show the head upright, facing
  Blender's front view (-Y). Blender treats one unit as 1 m, so the head is ~250 units tall:
  pass ``scale=0.001`` (metres) or scale the import by 0.001 if real size matters.
  UVs are written as given (``vt`` with v up, OBJ convention); the texture PNG is stored with
  row 0 = v 1, as image files are.
* glTF: glTF is **metres, +Y up, +Z forward** ("front of the asset faces +Z"), so the model
  frame maps 1:1 after multiplying by 0.001. glTF texture coordinates have v down (origin
  at the top-left of the image), so ``TEXCOORD_0 = (u, 1 - v)``. Vertices are split at UV
  seams (one glTF vertex per unique (vertex, uv) pair); normals are the smooth model normals
  of the original vertex, so seams do not show in the shading. Expression blendshapes become
  morph targets (POSITION deltas, metres) named in ``mesh.extras.targetNames`` (the
  convention Blender's and three.js's importers read), with default weights ``mesh.weights``.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from avatar_jax.geometry.mesh import vertex_normals

MM_TO_M = 0.001


def _as_uint8_image(texture) -> np.ndarray:
    """Texture ``[S, S, 3]`` float in [0, 1] or uint8 -> uint8 RGB."""
    tex = np.asarray(texture)
    if tex.ndim != 3 or tex.shape[2] not in (3, 4):
        raise ValueError(f"texture must have shape [H, W, 3|4], got {tex.shape}")
    if tex.dtype == np.uint8:
        return tex[..., :3]
    if not np.issubdtype(tex.dtype, np.floating):
        raise ValueError(f"texture dtype must be uint8 or float in [0, 1], got {tex.dtype}")
    return (np.clip(np.nan_to_num(tex[..., :3]), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def encode_image(texture, image_format: str = "png") -> bytes:
    """Encode an RGB texture to PNG (fast, low compression) or JPEG (quality 92) bytes."""
    bgr = cv2.cvtColor(_as_uint8_image(texture), cv2.COLOR_RGB2BGR)
    if image_format == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    elif image_format in ("jpg", "jpeg"):
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    else:
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    if not ok:
        raise ValueError("OpenCV could not encode the texture")
    return buf.tobytes()


def _check_mesh(verts, triangles, uvs, triangle_uvs):
    verts = np.asarray(verts, np.float64)
    triangles = np.asarray(triangles, np.int64)
    uvs = np.asarray(uvs, np.float64)
    triangle_uvs = np.asarray(triangle_uvs, np.int64)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"verts must have shape [V, 3], got {verts.shape}")
    if triangles.ndim != 2 or triangles.shape[1] != 3:
        raise ValueError(f"triangles must have shape [F, 3], got {triangles.shape}")
    if uvs.ndim != 2 or uvs.shape[1] != 2:
        raise ValueError(f"uvs must have shape [U, 2], got {uvs.shape}")
    if triangle_uvs.shape != triangles.shape:
        raise ValueError(f"triangle_uvs {triangle_uvs.shape} must match triangles "
                         f"{triangles.shape}")
    if triangles.size and (triangles.min() < 0 or triangles.max() >= len(verts)):
        raise ValueError(f"triangles index outside [0, {len(verts)})")
    if triangle_uvs.size and (triangle_uvs.min() < 0 or triangle_uvs.max() >= len(uvs)):
        raise ValueError(f"triangle_uvs index outside [0, {len(uvs)})")
    return verts, triangles, uvs, triangle_uvs


def unit_normals(verts: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals ``[V, 3]`` float64, every one of unit length as OBJ and
    glTF require (a vertex without area around it gets +Z)."""
    normals = np.asarray(vertex_normals(np.asarray(verts, np.float32), np.asarray(triangles)),
                         np.float64)
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.where(norm > 0.5, normals / np.maximum(norm, 1e-30), np.array([0.0, 0.0, 1.0]))


def write_obj(path_stem, verts, triangles, uvs, triangle_uvs, texture, *, scale: float = 1.0,
              material_name: str = "skin") -> tuple[Path, Path, Path]:
    """Write ``<stem>.obj``, ``<stem>.mtl`` and ``<stem>.png``.

    Args:
      path_stem: output path without extension (parent directories are created).
      verts: ``[V, 3]`` model frame, mm. triangles: ``[F, 3]`` CCW from outside.
      uvs: ``[U, 2]`` in [0, 1], v up. triangle_uvs: ``[F, 3]`` index into ``uvs``.
      texture: ``[S, S, 3]`` float in [0, 1] or uint8, row 0 = top (v = 1).
      scale: multiply positions (1 = millimetres, 0.001 = metres).

    Returns: the three paths written.
    """
    verts, triangles, uvs, triangle_uvs = _check_mesh(verts, triangles, uvs, triangle_uvs)
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    obj_path, mtl_path, png_path = (stem.with_suffix(s) for s in (".obj", ".mtl", ".png"))
    png_path.write_bytes(encode_image(texture, "png"))
    mtl_path.write_text(
        f"newmtl {material_name}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nNs 1\nillum 1\n"
        f"map_Kd {png_path.name}\n")
    normals = unit_normals(verts, triangles)
    lines = [f"# avatar-jax head: units {'mm' if scale == 1.0 else f'mm*{scale}'}, +Y up, "
             "+Z forward\n", f"mtllib {mtl_path.name}\n", "o head\n"]
    lines.append(_rows("v", verts * scale, "%.5f"))
    lines.append(_rows("vt", uvs, "%.6f"))
    lines.append(_rows("vn", normals, "%.5f"))
    lines.append(f"usemtl {material_name}\ns 1\n")
    f = np.stack([triangles + 1, triangle_uvs + 1, triangles + 1], -1)  # v/vt/vn, 1-based
    lines.append("\n".join("f " + " ".join(f"{a}/{b}/{c}" for a, b, c in tri) for tri in f))
    lines.append("\n")
    obj_path.write_text("".join(lines))
    return obj_path, mtl_path, png_path


def _rows(tag: str, arr: np.ndarray, fmt: str) -> str:
    if len(arr) == 0:
        return ""
    body = "\n".join(f"{tag} " + " ".join(fmt % x for x in row) for row in arr)
    return body + "\n"


def split_uv_seams(triangles, triangle_uvs):
    """One output vertex per unique (vertex id, uv id) corner pair.

    Returns: ``vertex_ids`` ``[N]`` (source vertex of each output vertex), ``uv_ids`` ``[N]``,
    ``faces`` ``[F, 3]`` indices into the output vertices.
    """
    pairs = np.stack([np.asarray(triangles).ravel(), np.asarray(triangle_uvs).ravel()], 1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return unique[:, 0], unique[:, 1], inverse.reshape(-1, 3)


def write_glb(path, verts, triangles, uvs, triangle_uvs, texture,
              morph_targets: dict[str, np.ndarray] | None = None, *, morph_weights=None,
              image_format: str = "png", double_sided: bool = True) -> Path:
    """Write a binary glTF 2.0 file with an embedded texture and named morph targets.

    Args:
      path: output ``.glb`` path.
      verts: ``[V, 3]`` model frame, mm (written in metres).
      triangles, uvs, triangle_uvs, texture: as in :func:`write_obj`.
      morph_targets: ordered ``{name: [V, 3] deltas in mm}`` (e.g. ARKit expression
        blendshapes) or None.
      morph_weights: ``[K]`` the mesh's default weight per morph target (None: zeros).
      image_format: 'png' or 'jpeg' for the embedded texture.
      double_sided: material flag; the head is open at the neck, so the inside may be seen.

    Returns: ``path``.
    """
    import pygltflib as gl

    verts, triangles, uvs, triangle_uvs = _check_mesh(verts, triangles, uvs, triangle_uvs)
    morph_targets = dict(morph_targets or {})
    for name, delta in morph_targets.items():
        if np.shape(delta) != verts.shape:
            raise ValueError(f"morph target {name!r} must have shape {verts.shape}, "
                             f"got {np.shape(delta)}")
    weights = np.zeros(len(morph_targets)) if morph_weights is None else np.asarray(morph_weights, np.float64)
    if weights.shape != (len(morph_targets),) or not np.all(np.isfinite(weights)):
        raise ValueError(f"morph_weights must be {len(morph_targets)} finite numbers, got shape {weights.shape}")
    vid, uid, faces = split_uv_seams(triangles, triangle_uvs)
    positions = (verts[vid] * MM_TO_M).astype(np.float32)
    normals = unit_normals(verts, triangles)[vid].astype(np.float32)
    texcoords = np.stack([uvs[uid, 0], 1.0 - uvs[uid, 1]], 1).astype(np.float32)
    index_type = np.uint16 if len(vid) < 65535 else np.uint32
    indices = faces.astype(index_type).ravel()

    blob = bytearray()
    views, accessors = [], []

    def add(array: np.ndarray, gl_type: str, component: int, target: int | None,
            with_bounds: bool = False) -> int:
        return _append_accessor(blob, views, accessors, array, gl_type, component, target, with_bounds)

    pos_acc = add(positions, gl.VEC3, gl.FLOAT, gl.ARRAY_BUFFER, True)
    nrm_acc = add(normals, gl.VEC3, gl.FLOAT, gl.ARRAY_BUFFER)
    uv_acc = add(texcoords, gl.VEC2, gl.FLOAT, gl.ARRAY_BUFFER)
    idx_acc = add(indices, gl.SCALAR,
                  gl.UNSIGNED_SHORT if index_type == np.uint16 else gl.UNSIGNED_INT,
                  gl.ELEMENT_ARRAY_BUFFER)
    targets = []
    for delta in morph_targets.values():
        d = (np.asarray(delta, np.float64)[vid] * MM_TO_M).astype(np.float32)
        targets.append({"POSITION": add(d, gl.VEC3, gl.FLOAT, gl.ARRAY_BUFFER, True)})

    mime = "image/png" if image_format == "png" else "image/jpeg"
    image_bytes = encode_image(texture, image_format)
    while len(blob) % 4:
        blob.append(0)
    views.append(gl.BufferView(buffer=0, byteOffset=len(blob), byteLength=len(image_bytes)))
    blob.extend(image_bytes)

    primitive = gl.Primitive(
        attributes=gl.Attributes(POSITION=pos_acc, NORMAL=nrm_acc, TEXCOORD_0=uv_acc),
        indices=idx_acc, material=0, targets=targets or None)
    mesh = gl.Mesh(name="head", primitives=[primitive],
                   weights=weights.tolist() if targets else None,
                   extras={"targetNames": list(morph_targets)} if targets else {})
    material = gl.Material(
        name="skin", doubleSided=double_sided,
        pbrMetallicRoughness=gl.PbrMetallicRoughness(
            baseColorTexture=gl.TextureInfo(index=0), metallicFactor=0.0, roughnessFactor=0.7))
    gltf = gl.GLTF2(
        asset=gl.Asset(generator="avatar-jax", version="2.0"),
        scene=0, scenes=[gl.Scene(nodes=[0])], nodes=[gl.Node(name="head", mesh=0)],
        meshes=[mesh], materials=[material],
        samplers=[gl.Sampler(magFilter=gl.LINEAR, minFilter=gl.LINEAR_MIPMAP_LINEAR,
                             wrapS=gl.CLAMP_TO_EDGE, wrapT=gl.CLAMP_TO_EDGE)],
        textures=[gl.Texture(sampler=0, source=0)],
        images=[gl.Image(bufferView=len(views) - 1, mimeType=mime, name="skin")],
        buffers=[gl.Buffer(byteLength=len(blob))],
        bufferViews=views, accessors=accessors)
    gltf.set_binary_blob(bytes(blob))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gltf.save_binary(os.fspath(path))
    return path


def read_glb_rig(path) -> dict:
    """A .glb written by :func:`write_glb`, back as arrays: ``positions [N, 3]`` (m), ``faces [F, 3]``,
    ``texcoords [N, 2]`` (glTF's v down), ``targets [K, N, 3]`` (m), ``target_names``, ``weights [K]``
    (defaults) and ``texture [S, S, 3]`` uint8. Raises ValueError naming what is missing."""
    import pygltflib as gl

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such .glb file")
    try:
        gltf = gl.GLTF2().load_binary(os.fspath(path))
    except Exception as err:  # pygltflib raises bare struct/JSON errors on corrupt files
        raise ValueError(f"{path}: not a readable binary glTF file ({type(err).__name__}: {err})") from None
    if not gltf.meshes or not gltf.meshes[0].primitives:
        raise ValueError(f"{path}: the glTF file has no mesh")
    blob = gltf.binary_blob()
    mesh = gltf.meshes[0]
    prim = mesh.primitives[0]
    read = lambda index: _read_accessor(gltf, blob, index)  # noqa: E731
    targets = prim.targets or []
    names = list((mesh.extras or {}).get("targetNames", [f"target{i}" for i in range(len(targets))]))
    image = gltf.images[gltf.textures[0].source] if gltf.textures else None
    texture = None
    if image is not None and image.bufferView is not None:
        view = gltf.bufferViews[image.bufferView]
        data = np.frombuffer(blob[view.byteOffset or 0:(view.byteOffset or 0) + view.byteLength], np.uint8)
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        texture = None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    positions = read(prim.attributes.POSITION)
    return {"positions": positions, "faces": read(prim.indices).reshape(-1, 3).astype(np.int64),
            "texcoords": read(prim.attributes.TEXCOORD_0) if prim.attributes.TEXCOORD_0 is not None else None,
            "targets": (np.stack([read(t["POSITION"]) for t in targets]) if targets
                        else np.zeros((0,) + positions.shape)),
            "target_names": names, "weights": np.asarray(mesh.weights or [0.0] * len(targets), np.float64),
            "texture": texture}


def _append_accessor(blob: bytearray, views: list, accessors: list, array: np.ndarray, gl_type: str,
                     component: int, target: int | None, with_bounds: bool) -> int:
    """Append ``array`` (``[N]`` or ``[N, C]``) to the binary blob, 4-byte aligned, as a buffer view
    and an accessor (with per-component min/max when ``with_bounds``); returns the accessor index."""
    import pygltflib as gl

    while len(blob) % 4:
        blob.append(0)
    data = np.ascontiguousarray(array).tobytes()
    views.append(gl.BufferView(buffer=0, byteOffset=len(blob), byteLength=len(data), target=target))
    blob.extend(data)
    acc = gl.Accessor(bufferView=len(views) - 1, componentType=component, count=len(array), type=gl_type)
    if with_bounds:
        acc.min = np.atleast_1d(array.min(0)).tolist()
        acc.max = np.atleast_1d(array.max(0)).tolist()
    accessors.append(acc)
    return len(accessors) - 1


_COMPONENTS = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def _read_accessor(gltf, blob: bytes, index: int) -> np.ndarray:
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    dtype, width = np.dtype(_COMPONENTS[acc.componentType]), _WIDTH[acc.type]
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    data = np.frombuffer(blob[start:start + acc.count * width * dtype.itemsize], dtype)
    return data.reshape(acc.count, width) if width > 1 else data


def add_animation(src, dst, times, weights, rotations=None, *, name: str = "speech") -> Path:
    """Copy the .glb ``src`` to ``dst`` with one animation: morph weights ``[T, K]`` (K = the mesh's
    morph targets) and optionally the head node's rotation ``[T, 4]`` quaternions (x, y, z, w), at
    ``times [T]`` seconds, linearly interpolated (plays in Blender and browser glTF viewers)."""
    import pygltflib as gl

    gltf = gl.GLTF2().load_binary(os.fspath(src))
    times = np.asarray(times, np.float32)
    weights = np.asarray(weights, np.float32)
    k = len(gltf.meshes[0].primitives[0].targets or [])
    if times.ndim != 1 or len(times) < 1 or np.any(np.diff(times) <= 0):
        raise ValueError(f"add_animation: times must be [T] strictly increasing seconds, got shape {times.shape}")
    if weights.shape != (len(times), k):
        raise ValueError(f"add_animation: weights must have shape [T, K] = ({len(times)}, {k}), got {weights.shape}")
    blob = bytearray(gltf.binary_blob())

    def add(array: np.ndarray, gl_type: str, with_bounds: bool = False) -> int:
        return _append_accessor(blob, gltf.bufferViews, gltf.accessors, np.asarray(array, np.float32), gl_type,
                                gl.FLOAT, None, with_bounds)

    node = gltf.scenes[gltf.scene or 0].nodes[0]
    samplers = [gl.AnimationSampler(input=add(times, gl.SCALAR, True), output=add(weights.ravel(), gl.SCALAR),
                                    interpolation="LINEAR")]
    channels = [gl.AnimationChannel(sampler=0, target=gl.AnimationChannelTarget(node=node, path="weights"))]
    if rotations is not None:
        rotations = np.asarray(rotations, np.float32)
        if rotations.shape != (len(times), 4):
            raise ValueError(f"add_animation: rotations must have shape [T, 4], got {rotations.shape}")
        rotations = rotations / np.linalg.norm(rotations, axis=1, keepdims=True)
        samplers.append(gl.AnimationSampler(input=samplers[0].input, output=add(rotations, gl.VEC4),
                                            interpolation="LINEAR"))
        channels.append(gl.AnimationChannel(sampler=1, target=gl.AnimationChannelTarget(node=node, path="rotation")))
    gltf.animations = [gl.Animation(name=name, samplers=samplers, channels=channels)]
    gltf.buffers[0].byteLength = len(blob)
    gltf.set_binary_blob(bytes(blob))
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    gltf.save_binary(os.fspath(dst))
    return dst
