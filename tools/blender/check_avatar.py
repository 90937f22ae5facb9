"""Import an avatar .glb in Blender, report what Blender sees and render it neutral and posed.

    blender -b --factory-startup --python tools/blender/check_avatar.py -- AVATAR.glb OUT_DIR \
        [--shapes jawOpen ...] [--size 320] [--fbx OUT.fbx]

Writes OUT_DIR/fitted.png (the shape keys at the file's default weights: the photo's expression),
OUT_DIR/neutral.png (every key at 0) and OUT_DIR/<shape>.png for each shape key set to 1 alone
(Cycles on the CPU: Blender's OpenGL engines need a display) and prints one line
``AVATAR_JAX_REPORT {json}`` with the shape-key names and default weights, the texture images' sizes,
the mesh's dimensions in Blender units (metres), and per shape the pixel box ``[x0, y0, x1, y1]``
of the vertices it moves most (where its render must differ) and its largest displacement in
metres. ``--fbx`` also exports the imported avatar as FBX (shape keys and the embedded texture)
for Unity and other FBX tools.

Debian's ``blender`` embeds the first ``python3`` on PATH: from inside a virtualenv, run it as
``PATH=/usr/bin:$PATH blender ...`` so that it finds the system NumPy its glTF importer needs.
"""

import argparse
import json
import sys

import bpy
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector


def _args():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    ap = argparse.ArgumentParser(prog="check_avatar.py")
    ap.add_argument("glb")
    ap.add_argument("out_dir")
    ap.add_argument("--shapes", nargs="+", default=["jawOpen"])
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--fbx", default=None)
    return ap.parse_args(argv)


def _import(path):
    import numpy as np

    if "bool" not in np.__dict__:
        # Blender 3.4's glTF importer still writes np.bool, which NumPy 1.24 (Debian 12's) removed.
        np.bool = bool
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=path)
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    if len(meshes) != 1:
        raise SystemExit(f"check_avatar: expected one mesh object in {path}, found {len(meshes)}")
    return meshes[0]


def _setup_render(obj, size):
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.image_settings.file_format = "PNG"
    world = bpy.data.worlds.new("studio")
    world.color = (0.05, 0.05, 0.05)
    scene.world = world
    corners = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
    centre = sum(corners, Vector()) / 8
    height = max(c.z for c in corners) - min(c.z for c in corners)
    # glTF's +Z forward is Blender's -Y: the face looks down -Y, so the camera sits there.
    cam_data = bpy.data.cameras.new("camera")
    cam_data.lens = 85.0
    cam = bpy.data.objects.new("camera", cam_data)
    cam.location = centre + Vector((0.0, -3.2 * height, 0.05 * height))
    cam.rotation_euler = (1.5708, 0.0, 0.0)
    scene.collection.objects.link(cam)
    scene.camera = cam
    light_data = bpy.data.lights.new("key", type="SUN")
    light_data.energy = 4.0
    light = bpy.data.objects.new("key", light_data)
    light.rotation_euler = (1.2, 0.0, -0.4)
    scene.collection.objects.link(light)
    return scene, cam


def _moved_box(obj, key, scene, cam):
    """Pixel box of the vertices that ``key`` moves at least half as far as its farthest vertex."""
    basis = obj.data.shape_keys.key_blocks[0]
    moved = [(k.co - b.co).length for k, b in zip(key.data, basis.data)]
    far = max(moved)
    pts = [world_to_camera_view(scene, cam, obj.matrix_world @ b.co)
           for b, m in zip(basis.data, moved) if m >= 0.5 * far]
    size = scene.render.resolution_x
    xs = [p.x * size for p in pts]
    ys = [(1.0 - p.y) * size for p in pts]  # image rows grow downwards
    return [min(xs), min(ys), max(xs), max(ys)], far


def _render(scene, path):
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)


def main():
    args = _args()
    obj = _import(args.glb)
    keys = obj.data.shape_keys.key_blocks if obj.data.shape_keys else []
    names = [k.name for k in keys][1:]  # key_blocks[0] is the Basis
    defaults = {k.name: k.value for k in keys[1:]}
    report = {"shape_keys": names, "default_weights": defaults,
              "images": {img.name: list(img.size) for img in bpy.data.images if img.size[0] > 0},
              "dimensions_m": list(obj.dimensions)}
    scene, cam = _setup_render(obj, args.size)
    _render(scene, f"{args.out_dir}/fitted.png")
    for key in keys[1:]:
        key.value = 0.0
    _render(scene, f"{args.out_dir}/neutral.png")
    report["moved"] = {}
    for shape in args.shapes:
        if shape not in names:
            raise SystemExit(f"check_avatar: {args.glb} has no shape key {shape!r}")
        key = keys[shape]
        box, far = _moved_box(obj, key, scene, cam)
        report["moved"][shape] = {"box_px": box, "max_m": far}
        key.value = 1.0
        _render(scene, f"{args.out_dir}/{shape}.png")
        key.value = 0.0
    for name, value in defaults.items():
        keys[name].value = value
    if args.fbx:
        bpy.ops.object.select_all(action="DESELECT")
        obj.select_set(True)
        bpy.ops.export_scene.fbx(filepath=args.fbx, use_selection=True, object_types={"MESH"},
                                 path_mode="COPY", embed_textures=True)
    print("AVATAR_JAX_REPORT " + json.dumps(report), flush=True)


main()
