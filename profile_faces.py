"""Training faces -> large-pose training faces (300W-LP's method).

Zhu et al. (CVPR 2016, "Face Alignment Across Large Poses: A 3D Solution")
fitted a 3D face model to each 300-W face and rendered it turned away. This
script does the same on the faces of a record file:

1. fit the Surrey Face Model (eos) to the face's 68 marks: shape, expression
   and a scaled-orthographic pose;
2. turn the fitted head in yaw (to an absolute yaw of 30-75 degrees, either
   way; `--yaw` for another range) and a little in pitch, about the head's
   centre;
3. re-render the crop triangle by triangle: each pixel the turned mesh covers
   is read from where the same point of the mesh lay in the photo. Next to
   the face, each row's background is stretched between the old and the new
   outline of the face and the shift fades out with distance, so hair and
   background follow the face's edge without a ghost of the old cheek. Parts
   that come into view are read from the photo's foreshortened edge of the
   face (they look stretched);
4. move the marks with the mesh. The jaw contour (marks 1-17) slides to the
   turned face's outline, as 300-W annotators place it: each contour mark
   takes the outermost point of its horizontal band of the mesh on its side.

The faces are written to a record that dataset.py reads like any other, with
`source` = "PHOTO#yaw+45" and a `synthetic_yaw` field (degrees). Only
training faces may be profiled: a face listed as a validation face in the
records' summary.json is refused.

    python profile_faces.py --record tfrecords/train.record --out tfrecords/profiled.record \
        --views 2 --examples tfrecords/profiled_examples.png
"""
import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

import geometry
from geometry import STORE_SIZE

MODEL_DIR = "../shared/data/3dmm"
MODEL_FILES = {"shape": "sfm_shape_3448.bin", "blendshapes": "expression_blendshapes_3448.bin",
               "mapping": "ibug_to_sfm.txt", "edges": "sfm_3448_edge_topology.json",
               "contours": "sfm_model_contours.json"}
CONTOUR = np.r_[0:8, 9:17]       # jaw marks that slide to the outline (the chin stays)
YAW_RANGE = (30.0, 75.0)         # absolute yaw of a profiled view, degrees
PITCH_JITTER = 10.0              # added pitch, degrees, uniform either way
FACING = 10.0                    # |yaw| above which a face is turned only its own way
BAND = 0.03                      # a contour band's half height, share of the face's height
PAD = 64                         # rendering margin around the crop, pixels
FADE = 0.6                       # background shift fades out over this share of the face width
EXAMPLE_YAWS = (-75.0, -45.0, 45.0, 75.0)


class ProfileError(Exception):
    """Input that cannot be profiled; the message names the file or face."""


@dataclass
class Fit:
    """A face's fitted head: model-space and camera-space vertices (x right,
    y up, z towards the camera), the mesh's triangles, the camera-to-pixel
    map, and the head's pose in degrees."""
    model: np.ndarray
    camera: np.ndarray
    triangles: np.ndarray
    scale: float
    offset: np.ndarray
    yaw: float
    pitch: float
    roll: float

    def pixels(self, camera_points):
        """Camera space -> image pixels (scaled orthographic, y down)."""
        return np.stack([camera_points[:, 0] * self.scale + self.offset[0],
                         -camera_points[:, 1] * self.scale + self.offset[1]], 1)


class FaceModel:
    """The Surrey Face Model and its 68-mark mapping, loaded with eos."""

    def __init__(self, folder=MODEL_DIR):
        import eos

        folder = Path(folder)
        missing = [name for name in MODEL_FILES.values() if not (folder / name).is_file()]
        if missing:
            raise ProfileError(f"3D face model folder {folder} lacks {', '.join(missing)} "
                               f"(the Surrey Face Model files of ../shared/data/3dmm)")
        path = {key: str(folder / name) for key, name in MODEL_FILES.items()}
        shape = eos.morphablemodel.load_model(path["shape"])
        self._eos = eos
        self._model = eos.morphablemodel.MorphableModel(
            shape.get_shape_model(), eos.morphablemodel.load_blendshapes(path["blendshapes"]),
            color_model=eos.morphablemodel.PcaModel(), vertex_definitions=None,
            texture_coordinates=shape.get_texture_coordinates())
        self._mapper = eos.core.LandmarkMapper(path["mapping"])
        self._edges = eos.morphablemodel.load_edge_topology(path["edges"])
        self._contour_marks = eos.fitting.ContourLandmarks.load(path["mapping"])
        self._model_contour = eos.fitting.ModelContour.load(path["contours"])
        self.mean = np.asarray(shape.get_shape_model().get_mean(), np.float64).reshape(-1, 3)
        self.triangles = np.asarray(shape.get_shape_model().get_triangle_list(), np.int64)
        # Vertex of each of the 68 marks that has one (the jaw contour has none).
        self.mark_vertices = {k: int(self._mapper.convert(str(k + 1))) for k in range(68)
                              if self._mapper.convert(str(k + 1)) is not None}

    def fit(self, marks, width, height):
        """Fit shape, expression and pose to (68, 2) marks in a width x height image."""
        eos = self._eos
        points = [eos.core.Landmark(str(k + 1), [float(x), float(y)])
                  for k, (x, y) in enumerate(marks)]
        mesh, pose, _, _ = eos.fitting.fit_shape_and_pose(
            self._model, points, self._mapper, int(width), int(height), self._edges,
            self._contour_marks, self._model_contour)
        model = np.asarray(mesh.vertices, np.float64)
        view = np.asarray(pose.get_modelview(), np.float64)
        projection = np.asarray(pose.get_projection(), np.float64)
        camera = model @ view[:3, :3].T + view[:3, 3]
        # Ortho projection then the viewport (0, height, width, -height).
        scale = projection[0, 0] * width / 2
        offset = np.array([(projection[0, 3] + 1) * width / 2,
                           height - (projection[1, 3] + 1) * height / 2])
        yaw, pitch, roll = np.asarray(pose.get_yaw_pitch_roll(), np.float64)
        return Fit(model, camera, np.asarray(mesh.tvi, np.int64), float(scale), offset,
                   float(yaw), float(pitch), float(roll))


def turned(fit, yaw_deg, pitch_deg=0.0):
    """Camera-space vertices of the fitted head turned by yaw, then pitch,
    about its centre (degrees; positive yaw turns the face to the image's left)."""
    yaw, pitch = np.deg2rad([yaw_deg, pitch_deg])
    about_y = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    about_x = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)],
                        [0, np.sin(pitch), np.cos(pitch)]])
    centre = fit.camera.mean(axis=0)
    return (fit.camera - centre) @ (about_x @ about_y).T + centre


def _raster(pixels, depth, triangles, shape):
    """Triangle index at each pixel of `shape` (-1: none), front-facing
    triangles drawn far to near, and the facing mask of all triangles."""
    corners = pixels[triangles]                                   # (T, 3, 2)
    edge_a, edge_b = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    area = edge_a[:, 0] * edge_b[:, 1] - edge_a[:, 1] * edge_b[:, 0]
    facing = area < 0            # the SFM winds its triangles clockwise in y-down pixels
    ids = np.full(shape, -1, np.int32)
    order = np.flatnonzero(facing)
    order = order[np.argsort(depth[triangles[order]].mean(axis=1))]
    fixed = np.round(corners * 16).astype(np.int32)               # 4 bits of subpixel
    for t in order:
        cv2.fillConvexPoly(ids, fixed[t], int(t), lineType=cv2.LINE_8, shift=4)
    return ids


def _affine(from_pixels, to_points, triangles):
    """Per triangle, the affine map (T, D, 3) taking its corners in
    `from_pixels` (V, 2) to theirs in `to_points` (V, D): barycentric
    interpolation, written as one matrix per triangle."""
    a = np.concatenate([from_pixels[triangles], np.ones(triangles.shape + (1,))], 2)
    b = to_points[triangles]
    # A tiny ridge keeps edge-on (zero-area) triangles finite; they cover no pixel.
    gram = np.einsum("tki,tkj->tij", a, a) + 1e-9 * np.eye(3)
    return np.linalg.solve(gram, np.einsum("tki,tkj->tij", a, b)).transpose(0, 2, 1)


def _apply(maps, ids, points):
    """Points (P, 2) through their triangles' affine maps (ids (P,))."""
    m = maps[ids]
    return np.einsum("pij,pj->pi", m, np.concatenate([points, np.ones((len(points), 1))], 1))


def _outline(ids):
    """Per row, the leftmost and rightmost covered pixel (nan where none)."""
    covered = ids >= 0
    rows = covered.any(axis=1)
    columns = np.arange(ids.shape[1])
    left = np.where(rows, np.where(covered, columns, np.inf).min(axis=1), np.nan)
    right = np.where(rows, np.where(covered, columns, -np.inf).max(axis=1), np.nan)
    return left, right


def _fill_rows(values):
    """Rows without a value take the nearest row's."""
    known = np.flatnonzero(np.isfinite(values))
    return np.interp(np.arange(len(values)), known, values[known])


def _background_map(source_ids, target_ids, face_width):
    """x of the photo read at each canvas pixel outside the turned face:
    each row stretched between the old and new outline, fading with distance."""
    height, width = target_ids.shape
    src_left, src_right = _outline(source_ids)
    dst_left, dst_right = _outline(target_ids)
    rows = np.isfinite(dst_left) & np.isfinite(src_left)
    row_index = np.arange(height)
    known = np.flatnonzero(rows)
    vertical = np.clip(np.maximum(known[0] - row_index, row_index - known[-1]), 0, None)
    shift_left = _fill_rows(np.where(rows, src_left - dst_left, np.nan))
    shift_right = _fill_rows(np.where(rows, src_right - dst_right, np.nan))
    left_edge, right_edge = _fill_rows(np.where(rows, dst_left, np.nan)), _fill_rows(
        np.where(rows, dst_right, np.nan))
    xx = np.arange(width, dtype=np.float64)[None, :]
    reach = FADE * face_width
    fade_left = np.clip(1 - (left_edge[:, None] - xx) / reach, 0, 1)
    fade_right = np.clip(1 - (xx - right_edge[:, None]) / reach, 0, 1)
    fade_rows = np.clip(1 - vertical / reach, 0, 1)[:, None]
    middle = (left_edge + right_edge)[:, None] / 2
    shift = np.where(xx < middle, shift_left[:, None] * fade_left, shift_right[:, None] * fade_right)
    return xx + shift * fade_rows


def _contour_bands(fit, model_points, face_height):
    """Each contour mark's band: the mesh's vertices at its height (model y)
    on its side of the face (model x), leaving out the middle third, where
    the nose would take the outline at large yaw."""
    bands = []
    for point in model_points:
        side = np.sign(point[0]) or 1.0
        band = ((np.abs(fit.model[:, 1] - point[1]) < BAND * face_height)
                & (fit.model[:, 0] * side > abs(point[0]) / 3))
        bands.append(np.flatnonzero(band) if band.any()
                     else np.argmin(np.abs(fit.model[:, 1] - point[1]))[None])
    return bands


def _outline_x(pixels, band, side):
    """The outermost x of a band's vertices on its side: model +x is the
    image's right in an unmirrored view."""
    return pixels[band, 0].max() if side > 0 else pixels[band, 0].min()


def profile(image, marks, fit, yaw_deg, pitch_deg=0.0):
    """The face of `image` (H, W, 3 uint8) with its (68, 2) marks, turned by
    (yaw_deg, pitch_deg) -> (canvas, marks in canvas pixels). The canvas is
    the image padded by PAD on each side (canvas = image pixel + PAD)."""
    height, width = image.shape[:2]
    canvas_shape = (height + 2 * PAD, width + 2 * PAD)
    source_px = fit.pixels(fit.camera) + PAD
    moved = turned(fit, yaw_deg, pitch_deg)
    target_px = fit.pixels(moved) + PAD
    source_ids = _raster(source_px, fit.camera[:, 2], fit.triangles, canvas_shape)
    target_ids = _raster(target_px, moved[:, 2], fit.triangles, canvas_shape)

    # Pixels: on the turned mesh, from the same mesh point in the photo.
    yy, xx = np.mgrid[:canvas_shape[0], :canvas_shape[1]].astype(np.float64)
    map_x = _background_map(source_ids, target_ids, np.ptp(source_px[:, 0]))
    map_y = yy.copy()
    covered = target_ids >= 0
    inside = _apply(_affine(target_px, source_px, fit.triangles), target_ids[covered],
                    np.stack([xx[covered], yy[covered]], 1))
    map_x[covered], map_y[covered] = inside[:, 0], inside[:, 1]
    canvas = cv2.remap(image, (map_x - PAD).astype(np.float32), (map_y - PAD).astype(np.float32),
                       cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    # Marks: each one's place on the photo's mesh, then that place turned.
    points = np.asarray(marks, np.float64) + PAD
    cells = np.round(points).astype(int)
    on_canvas = ((cells >= 0) & (cells < np.array(canvas_shape[::-1]))).all(axis=1)
    ids = np.full(len(points), -1)
    ids[on_canvas] = source_ids[cells[on_canvas, 1], cells[on_canvas, 0]]
    hit = ids >= 0
    nearest = np.argmin(((source_px[:, None] - points[None]) ** 2).sum(-1), axis=0)
    out = target_px[nearest] + (points - source_px[nearest])   # off the mesh: its vertex's shift
    # One set of triangle maps, photo pixels -> (turned pixels, model point).
    moved = _apply(_affine(source_px, np.c_[target_px, fit.model], fit.triangles),
                   ids[hit], points[hit])
    out[hit] = moved[:, :2]
    model_points = fit.model[nearest].copy()
    model_points[hit] = moved[:, 2:]

    # The jaw contour slides with the outline (zero turn: it stays put).
    bands = _contour_bands(fit, model_points[CONTOUR], np.ptp(fit.model[:, 1]))
    for k, band in zip(CONTOUR, bands):
        side = np.sign(model_points[k, 0]) or 1.0
        out[k, 0] = points[k, 0] + (_outline_x(target_px, band, side)
                                    - _outline_x(source_px, band, side))
    return canvas, out


def views_of(fit, rng, count, yaw_range=YAW_RANGE):
    """`count` seeded (yaw turn, pitch turn, target yaw) for a fitted face,
    the target's absolute yaw drawn from `yaw_range` (degrees).
    A face already turned (|yaw| > FACING) is turned further its own way:
    the side it shows is the side whose texture the photo holds, while the
    other way would stretch the few pixels of its far cheek across the face.
    A frontal face's views alternate sides."""
    if abs(fit.yaw) > FACING:
        sides = [np.sign(fit.yaw)] * count
    else:
        first = rng.choice([-1.0, 1.0])
        sides = [first * (-1) ** v for v in range(count)]
    out = []
    for side in sides:
        target = side * rng.uniform(*yaw_range)
        out.append((target - fit.yaw, rng.uniform(-PITCH_JITTER, PITCH_JITTER), target))
    return out


def stored_face(canvas, canvas_marks, transform):
    """A profiled canvas -> (stored crop, marks in its pixels, transform to
    the photo), cropped around the new marks as generate_mesh_dataset.py
    crops any face. `transform` maps the unpadded canvas to the photo."""
    center, side = geometry.crop_square(geometry.landmark_box(canvas_marks))
    patch, to_canvas = geometry.crop(canvas, center, side * geometry.STORE_FACTOR, STORE_SIZE)
    scale, x0, y0 = transform
    to_photo = np.array([to_canvas[0] * scale, (to_canvas[1] - PAD) * scale + x0,
                         (to_canvas[2] - PAD) * scale + y0])
    return patch, geometry.to_crop(canvas_marks, to_canvas), to_photo


def framed(image, marks, rng, widths, frame=(640, 480)):
    """`image` (a face crop) scaled so that the landmark box of `marks` is a
    seeded width in `widths` px (at most the frame's height), pasted at a
    seeded place in a `frame`-sized field of its mean colour with noise ->
    (frame, marks in its pixels): a turned face as a detector meets it."""
    width, height = frame
    box = geometry.landmark_box(marks)
    side = int(round(image.shape[0] * rng.uniform(*widths) / (box[2] - box[0])))
    side = min(side, width, height)
    small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    field = np.clip(rng.normal(small.reshape(-1, 3).mean(0), 12, (height, width, 3)), 0, 255)
    x0, y0 = rng.integers(0, width - side + 1), rng.integers(0, height - side + 1)
    field[y0:y0 + side, x0:x0 + side] = small
    return field.astype(np.uint8), np.asarray(marks) * side / image.shape[0] + [x0, y0]


def read_faces(record):
    """(image, marks, transform, source, attributes, layout) of each face in a record."""
    import keras_env  # noqa: F401  (must precede TensorFlow)
    import dataset

    layout, _ = dataset.record_info(record)
    if layout != "300w68":
        raise ProfileError(f"{record}: profiling needs 68-point (300-W) faces, found {layout}")
    for face in dataset._load(record, 68):
        yield (face["image"].numpy(), face["marks"].numpy(), face["transform"].numpy(),
               face["source"].numpy().decode(), tuple(face["attributes"].numpy()), layout)


def check_training_faces(record, sources):
    """Refuse validation faces: those the records' summary.json lists as test."""
    summary = Path(record).parent / "summary.json"
    if not summary.is_file():
        return
    held_out = set(json.loads(summary.read_text()).get("test_sources", []))
    clash = [s for s in sources if s in held_out]
    if clash:
        raise ProfileError(f"{record} holds {len(clash)} validation faces ({clash[0]}, ...; "
                           f"listed in {summary}); only training faces may be profiled")


_WORKER = {}


def _start_worker(model_dir):
    _WORKER["model"] = FaceModel(model_dir)


def _profile_face(job):
    """One face's profiled views -> [(patch, marks, transform, target yaw)]."""
    index, image, marks, transform, views, seed, yaw_range = job
    fit = _WORKER["model"].fit(marks, image.shape[1], image.shape[0])
    rng = np.random.default_rng([seed, index])
    out = []
    for yaw_turn, pitch_turn, target in views_of(fit, rng, views, yaw_range):
        canvas, canvas_marks = profile(image, marks, fit, yaw_turn, pitch_turn)
        out.append((*stored_face(canvas, canvas_marks, transform), target))
    return out


def example_sheet(faces, model, path, yaws=EXAMPLE_YAWS):
    """A sheet of faces (rows) as stored, then turned to each absolute yaw,
    model crops with marks drawn (jaw contour red, the rest green)."""
    from dataset import MODEL_OFFSET

    offset = int(MODEL_OFFSET)
    rows = []
    for image, marks, transform in faces:
        fit = model.fit(marks, image.shape[1], image.shape[0])
        tiles = [(image, marks, "stored")]
        for yaw in yaws:
            canvas, canvas_marks = profile(image, marks, fit, yaw - fit.yaw)
            patch, patch_marks, _ = stored_face(canvas, canvas_marks, transform)
            tiles.append((patch, patch_marks, f"yaw {yaw:+.0f}"))
        row = []
        for tile, tile_marks, label in tiles:
            crop = np.ascontiguousarray(tile[offset:offset + 128, offset:offset + 128, ::-1])
            crop = cv2.resize(crop, (256, 256), interpolation=cv2.INTER_LINEAR)
            for k, (x, y) in enumerate((tile_marks - offset + 0.5) * 2 - 0.5):
                colour = (0, 0, 255) if k < 17 else (0, 255, 0)
                cv2.circle(crop, (int(round(x)), int(round(y))), 2, colour, -1)
            cv2.putText(crop, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
            row.append(crop)
        rows.append(np.concatenate(row, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate(rows, 0))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--record", default="tfrecords/train.record",
                        help="training faces (68-point records from generate_mesh_dataset.py)")
    parser.add_argument("--out", default="tfrecords/profiled.record")
    parser.add_argument("--views", type=int, default=2, help="profiled views per face")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--yaw", type=float, nargs=2, default=YAW_RANGE, metavar=("LOW", "HIGH"),
                        help="absolute yaw of the views, degrees (default %(default)s; "
                             "smaller for moderately turned faces)")
    parser.add_argument("--model_dir", default=MODEL_DIR,
                        help="folder of the Surrey Face Model files (eos)")
    parser.add_argument("--limit", type=int, default=None, help="profile only the first N faces")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--summary", default=None, metavar="JSON",
                        help="write what was made and how long it took here")
    parser.add_argument("--examples", default=None, metavar="PNG",
                        help=f"also draw 8 faces at yaws {EXAMPLE_YAWS} here")
    args = parser.parse_args(argv)
    if args.views < 1:
        parser.error(f"--views must be at least 1, got {args.views}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if not 0 <= args.yaw[0] <= args.yaw[1] <= 90:
        parser.error(f"--yaw needs 0 <= LOW <= HIGH <= 90, got {args.yaw[0]:g} {args.yaw[1]:g}")
    args.yaw = tuple(args.yaw)
    return args


def main(argv=None):
    args = parse_args(argv)
    from multiprocessing import get_context

    import tensorflow as tf
    from generate_mesh_dataset import Face, face_example

    try:
        model = FaceModel(args.model_dir)
        faces = list(read_faces(args.record))[:args.limit]
        check_training_faces(args.record, [f[3] for f in faces])
    except (ProfileError, ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    print(f"profiling {len(faces)} faces of {args.record}, {args.views} views each "
          f"(|yaw| {args.yaw[0]:.0f}-{args.yaw[1]:.0f} deg), {args.jobs} processes")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    jobs = [(i, image, marks, transform, args.views, args.seed, args.yaw)
            for i, (image, marks, transform, *_rest) in enumerate(faces)]
    yaws = []
    started = time.perf_counter()
    try:
        with get_context("fork").Pool(args.jobs, _start_worker, (args.model_dir,)) as pool, \
                tf.io.TFRecordWriter(str(partial)) as writer:
            results = pool.imap(_profile_face, jobs, chunksize=4)
            for (_, _, _, source, attributes, layout), views in tqdm(
                    zip(faces, results), total=len(faces), desc="profiling", unit="face"):
                for patch, marks, transform, yaw in views:
                    face = Face(Path(source), marks, layout, attributes, f"{source}#yaw{yaw:+.0f}")
                    writer.write(face_example(patch, marks, transform, face,
                                              synthetic_yaw=yaw).SerializeToString())
                    yaws.append(yaw)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)
    seconds = time.perf_counter() - started
    print(f"written: {len(yaws)} profiled faces in {out} (|yaw| median "
          f"{np.median(np.abs(yaws)):.0f} deg) in {seconds / 60:.1f} min")
    if args.summary:
        from tflite_model import cpu_info
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary).write_text(json.dumps({
            "record": args.record, "out": str(out), "faces": len(faces), "views": args.views,
            "written": len(yaws), "seed": args.seed, "yaw_range": args.yaw, "processes": args.jobs,
            "seconds": seconds, "cpu": cpu_info(),
            "abs_yaw_percentiles": {str(q): float(np.percentile(np.abs(yaws), q))
                                    for q in (10, 50, 90)}}, indent=1))
    if args.examples:
        picks = np.linspace(0, len(faces) - 1, 8).astype(int)
        example_sheet([faces[i][:3] for i in picks], model, args.examples)
        print(f"examples: {args.examples}")


if __name__ == "__main__":
    main()
