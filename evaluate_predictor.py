"""Score the whole predictor (face detector + landmarks) on annotated photos.

Unlike `landmark.py --eval_only`, which crops each face from its true
landmarks, this finds the faces with the detector, as a user's photo would
be processed, and scores the marks of the detection that matches each
annotated face (NME, FR and AUC at 0.10 in image pixels). Faces with no
matching detection are counted as missed.

    python evaluate_predictor.py --split tfrecords/summary.json   # the validation faces
    python evaluate_predictor.py --dirs ../shared/data/300w/afw --model exported
    python evaluate_predictor.py --profile tfrecords/test.record   # turned faces, end to end
    python evaluate_predictor.py --small tfrecords/test.record     # 30-80 px faces, end to end
    python evaluate_predictor.py --wflw WFLW/WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_test.txt

WFLW faces are scored on the 68 of their 98 marks that the 300-W layout
has (layouts.WFLW_TO_300W), per attribute too when the lines carry the flags.
"""
import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import generate_mesh_dataset as gen
import geometry
import hard_view
import metrics
from face_detector import iou
from layouts import WFLW_ATTRIBUTES, WFLW_TO_300W, layout_for_count
from geometry import RECROP_SHIFT
from predict import predictor, unwritable
from tflite_model import cpu_info

MIN_IOU = 0.3
# --profile's frames: faces of 40-160 px (landmark box width), as small as
# many in-the-wild faces are, in 640x480 frames; a seed of their own.
PROFILE_WIDTHS = (40.0, 160.0)
PROFILE_FRAME = (640, 480)
PROFILE_SEED = 7
# --small's frames: each validation photo shrunk so its face is 30-80 px
# wide (as many in-the-wild faces are), in a 1024x768 frame whose margin
# repeats the photo's edge pixels (no face is repeated); a seed of their own.
SMALL_WIDTHS = (30.0, 80.0)
SMALL_FRAME = (1024, 768)
SMALL_SEED = 11


def annotated_faces(dirs=(), split=None):
    """Faces from 300-W folders, or the test faces listed in a records
    summary.json (written by generate_mesh_dataset.py)."""
    faces = [f for d in dirs for f in gen.read_300w_dir(d)]
    if split:
        for source in gen.read_test_sources(split):
            faces.append(gen.Face(source, gen.read_pts(source.with_suffix(".pts")), "300w68",
                                  source=str(source)))
    if not faces:
        raise gen.DatasetError("no annotated faces: give --dirs or --split")
    return faces


def wflw_faces(list_path, images=None):
    """The faces of a WFLW annotation list (207 fields a line, or the
    attribute subsets' 197), their marks cut to the 300-W 68. Photos are
    looked for under `images`, else in a WFLW_images folder beside the list
    or up to two folders above it (the release's own layout)."""
    list_path = Path(list_path)
    if not list_path.is_file():
        raise FileNotFoundError(f"--wflw {list_path}: no such file")
    if images is None:
        found = [d / gen.WFLW_IMAGE_DIR for d in list(list_path.parents)[:3]
                 if (d / gen.WFLW_IMAGE_DIR).is_dir()]
        if not found:
            raise FileNotFoundError(f"--wflw {list_path}: no {gen.WFLW_IMAGE_DIR} folder beside "
                                    f"it or above it; give --wflw_images")
        images = found[0]
    elif not Path(images).is_dir():
        raise FileNotFoundError(f"--wflw_images {images}: no such folder")
    faces = []
    for where, face in gen.wflw_list_faces(list_path, images):
        if not face.image_path.is_file():
            raise FileNotFoundError(f"{where}: photo not found: {face.image_path}")
        faces.append(dataclasses.replace(face, marks=face.marks[list(WFLW_TO_300W)],
                                         layout="300w68"))
    if not faces:
        raise gen.DatasetError(f"--wflw {list_path}: no annotation lines")
    return faces


def by_region(offsets):
    """Each 300-W region's NME and mean offset (x, y; + is right and down)
    over the found faces, in eye distances, and the NME of the 51 marks
    besides the jaw: WFLW's face contour runs higher up the face than the
    300-W jaw, so its mapped marks differ by convention, not only by error."""
    if not offsets:
        return {}
    offsets = np.array(list(offsets.values()))
    errors = np.linalg.norm(offsets, axis=-1)
    layout = layout_for_count(offsets.shape[1])
    regions = {name: {"nme": float(errors[:, list(marks)].mean()),
                      "offset": [float(v) for v in offsets[:, list(marks)].mean(axis=(0, 1))]}
               for name, marks in layout.regions}
    jaw = set(dict(layout.regions)["jaw"])
    inner = [i for i in range(offsets.shape[1]) if i not in jaw]
    regions["without_jaw"] = {"nme": float(errors[:, inner].mean()),
                              "offset": [float(v) for v in offsets[:, inner].mean(axis=(0, 1))]}
    return regions


def by_attribute(faces, nmes):
    """Scores of the faces flagged with each WFLW attribute, for lines
    that carry the flags; {} otherwise."""
    flags = np.array([f.attributes for f in faces if isinstance(f, gen.Face)])
    if len(flags) != len(nmes) or not (flags >= 0).all():
        return {}
    out = {}
    for column, name in enumerate(WFLW_ATTRIBUTES):
        chosen = nmes[flags[:, column] == 1]
        found = chosen[~np.isnan(chosen)]
        out[name] = {**(metrics.summarize(found) if len(found) else
                        {"nme": None, "fr": None, "auc": None}),
                     "faces": len(chosen), "missed": int(np.isnan(chosen).sum())}
    return out


def profile_frames(record, seed=PROFILE_SEED):
    """The hard view's profile kind end to end: each validation face of
    `record` turned in 3D to 50-75 degrees of yaw (hard_view.profile_canvases),
    its landmark box a seeded PROFILE_WIDTHS px wide in a 640x480 frame
    (profile_faces.framed) -> [(BGR frame, marks (68, 2) in its pixels)]."""
    import keras_env  # noqa: F401  (must precede TensorFlow)
    import dataset
    import profile_faces

    if dataset.record_info(record)[0] != "300w68":
        raise ValueError(f"--profile {record}: profiling needs 68-point (300-W) faces")
    faces = list(dataset._load(record, 68).as_numpy_iterator())
    canvases = hard_view.profile_canvases([f["image"] for f in faces], [f["marks"] for f in faces])
    if canvases is None:
        raise FileNotFoundError("--profile needs the 3D face model of ../shared/data/3dmm")
    rng = np.random.default_rng(seed)
    frames = []
    for canvas, canvas_marks in canvases:
        # The stored-crop square around the turned face: the canvas's margin
        # beyond it is the photo mirrored, and would show the face again.
        patch, marks, _ = profile_faces.stored_face(canvas, canvas_marks, np.array([1, 0, 0]))
        frame, marks = profile_faces.framed(patch, marks, rng, PROFILE_WIDTHS, PROFILE_FRAME)
        frames.append((frame[:, :, ::-1].copy(), marks))     # RGB records -> BGR frames
    return frames


def small_frames(record, seed=SMALL_SEED):
    """Each validation photo of `record`, shrunk so its face's landmark box
    is a seeded SMALL_WIDTHS px wide, placed in a SMALL_FRAME frame (cut to
    it around the face if larger) -> [(BGR frame, marks (N, 2) in its pixels)]."""
    import cv2

    import keras_env  # noqa: F401  (must precede TensorFlow)
    import dataset

    rng = np.random.default_rng(seed)
    (frame_w, frame_h), frames = SMALL_FRAME, []
    for source, photo, reason, marks in dataset.source_photos(record):
        if photo is None:
            raise FileNotFoundError(f"--small: {source}: {reason}")
        box = geometry.landmark_box(marks)
        factor = rng.uniform(*SMALL_WIDTHS) / max(box[2] - box[0], 1.0)
        small = cv2.resize(photo, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        marks = marks * factor
        centre = (box[:2] + box[2:]) / 2 * factor
        # Where the photo's top-left lands in the frame: at random, but with the face inside.
        height, width = small.shape[:2]
        x = int(rng.uniform(frame_w / 8, frame_w * 7 / 8) - centre[0])
        y = int(rng.uniform(frame_h / 8, frame_h * 7 / 8) - centre[1])
        left, top = max(x, 0), max(y, 0)
        part = small[max(-y, 0):max(-y, 0) + frame_h - top, max(-x, 0):max(-x, 0) + frame_w - left]
        frame = cv2.copyMakeBorder(part, top, frame_h - top - part.shape[0], left,
                                   frame_w - left - part.shape[1], cv2.BORDER_REPLICATE)
        frames.append((frame, marks + [x, y]))
    return frames


def score(model, faces, offsets=None):
    """(Per-face NME of the matched detection, NaN where the face was
    missed; detections matching no annotated face, in all; ms per photo of
    `predict`, image decoding included). `faces`: Face records (photos on
    disk; faces of one photo are scored on one pass of the predictor, each
    detection matched to one face at most) or (BGR image, marks) pairs.
    An `offsets` dict gets each found face's marks minus the true ones, (N, 2)
    over the eye-corner distance, by the face's index."""
    photos = {}
    for index, face in enumerate(faces):
        key = index if isinstance(face, tuple) else str(face.image_path)
        photos.setdefault(key, []).append(index)
    nmes, unmatched, times = np.full(len(faces), np.nan), 0, []
    for indices in tqdm(photos.values(), desc="photos", unit="photo"):
        first = faces[indices[0]]
        image = first[0] if isinstance(first, tuple) else first.image_path
        truths = [faces[i][1] if isinstance(faces[i], tuple) else faces[i].marks for i in indices]
        start = time.perf_counter()
        found = model.predict(image)
        times.append(1000 * (time.perf_counter() - start))
        boxes = np.array([f["box"] for f in found]).reshape(-1, 4)
        overlaps = np.array([iou(geometry.landmark_box(m), boxes) for m in truths]).reshape(
            len(truths), len(boxes))
        # Greedy one-to-one matching, the best overlap first.
        taken = set()
        for face_at, box_at in zip(*np.unravel_index(np.argsort(-overlaps, axis=None),
                                                     overlaps.shape)):
            if overlaps[face_at, box_at] < MIN_IOU:
                break
            index = indices[face_at]
            if box_at in taken or not np.isnan(nmes[index]):
                continue
            taken.add(box_at)
            layout = layout_for_count(len(truths[face_at]))
            predicted, truth = found[box_at]["marks"], truths[face_at]
            nmes[index] = metrics.nme_per_face(predicted[None], truth[None], layout.eye_corners)[0]
            if offsets is not None:
                left, right = layout.eye_corners
                offsets[index] = (predicted - truth) / np.linalg.norm(truth[left] - truth[right])
        unmatched += len(found) - len(taken)
    return nmes, unmatched, times


def share_or_none(text):
    """--recrop's value: a number, or "none"."""
    if text == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share such as 0.08, or none; "
                                         f"got {text!r}") from None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dirs", nargs="*", default=[], help="300-W style folders")
    p.add_argument("--split", help="a records summary.json: score its test faces")
    p.add_argument("--model", default=None, help="landmark model (default: bundled int8)")
    p.add_argument("--detector", nargs="+", default=None,
                   help="face detector .tflite, or several tried in order (default: bundled)")
    p.add_argument("--refine", type=int, default=None,
                   help="re-crops around the predicted marks (default: the predictor's, one for "
                        "small or turned faces)")
    p.add_argument("--recrop", default=RECROP_SHIFT, type=share_or_none, metavar="SHARE|none",
                   help="re-crop a face whose marks lie further than this share of the crop "
                        "from its centre ('none': never; default: the predictor's, %(default)s)")
    p.add_argument("--pose_model", default=None,
                   help="large-pose model paired with --model (default: the predictor's: the "
                        "bundled pair when --model is not given; 'none': one model)")
    p.add_argument("--second_model", default=None,
                   help="second main model of the ensemble, or 'flip': the main model's "
                        "mirrored look in its place (default: the predictor's, 'flip' when --model is "
                        "not given; 'none': the pair)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average with the mirrored crop (the predictor's default: on for one "
                        "model, off for a pair)")
    p.add_argument("--profile", metavar="RECORD",
                   help="score the faces of a 300-W records file turned to 50-75 degrees of "
                        "yaw (the hard view's profile kind) in 640x480 frames, end to end")
    p.add_argument("--small", metavar="RECORD",
                   help="score the photos of a records file shrunk so each face is 30-80 px "
                        "wide, in 1024x768 frames, end to end")
    p.add_argument("--wflw", metavar="LIST",
                   help="score the faces of a WFLW annotation list on their 68 300-W marks, "
                        "per attribute too (list_98pt_rect_attr_test.txt, or a subset list)")
    p.add_argument("--wflw_images", metavar="DIR",
                   help="WFLW's photo folder (default: a WFLW_images folder beside --wflw's "
                        "list or up to two folders above it)")
    p.add_argument("--small_faces", action=argparse.BooleanOptionalAction, default=True,
                   help="search photos over 800 px in squares for small faces (the "
                        "predictor's default: on)")
    p.add_argument("--out", default="results/predictor_eval.json")
    args = p.parse_args(argv)
    problem = unwritable(Path(args.out), folder=False)  # before minutes of faces
    if problem:
        p.error(f"--out {args.out}: {problem}")
    try:
        # The predictor first: a bad model or setting is named before the faces are made.
        model = predictor(args.detector, args.model, refine=args.refine, flip=args.flip,
                          pose_model_path=args.pose_model, recrop=args.recrop,
                          small_faces=args.small_faces, second_model_path=args.second_model)
        if sum(bool(v) for v in (args.profile, args.small, args.wflw)) > 1:
            raise ValueError("give one of --profile, --small and --wflw")
        if args.wflw_images and not args.wflw:
            raise ValueError("--wflw_images needs --wflw")
        if args.wflw:
            faces = wflw_faces(args.wflw, args.wflw_images)
        elif args.small:
            if not Path(args.small).is_file():
                raise FileNotFoundError(f"--small {args.small}: no such file (make data writes it)")
            faces = small_frames(args.small)
        elif args.profile:
            if not Path(args.profile).is_file():
                raise FileNotFoundError(f"--profile {args.profile}: no such file "
                                        f"(make data writes it)")
            faces = profile_frames(args.profile)
        else:
            faces = annotated_faces(args.dirs, args.split)
        offsets = {}
        nmes, unmatched, times = score(model, faces, offsets)
    except (gen.DatasetError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    found = nmes[~np.isnan(nmes)]
    # With every face missed there is no score: null, not the bare NaN token
    # that Python writes and strict JSON readers reject.
    scores = metrics.summarize(found) if len(found) else {"nme": None, "fr": None, "auc": None}
    result = {**scores, "faces": len(nmes), "missed": int(np.isnan(nmes).sum()),
              "missed_share": float(np.isnan(nmes).mean()), "unmatched_detections": unmatched,
              "small_faces": model.small_faces, "ms_per_photo_median": float(np.median(times)),
              "cpu": cpu_info(),
              "model": args.model or "bundled int8",
              "pose_model": str(model.pose_model) if model.pose_model else None,
              "second_model": str(model.second_model) if model.second_model else None,
              "detector": [Path(d).name for d in args.detector] if args.detector else "default",
              "refine": args.refine, "refined": model.refines, "recrop": model.recrop,
              "recropped": model.recrops,
              "flip": model.flip, "dirs": args.dirs, "split": args.split,
              "profile": args.profile and {"record": args.profile, "yaw": hard_view.PROFILE_YAW,
                                           "face_widths": PROFILE_WIDTHS, "seed": PROFILE_SEED},
              "small": args.small and {"record": args.small, "face_widths": SMALL_WIDTHS,
                                       "frame": SMALL_FRAME, "seed": SMALL_SEED},
              "wflw": args.wflw and {"list": args.wflw, "marks": "68 of 98 (layouts.WFLW_TO_300W)"},
              "attributes": by_attribute(faces, nmes),
              "regions": by_region(offsets) if args.wflw else {},
              "nmes": [None if np.isnan(v) else float(v) for v in nmes]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, allow_nan=False))
    if not len(found):
        print(f"{len(nmes)} faces, all missed by the detector: no score -> {args.out}")
        return
    print(f"{len(nmes)} faces, {result['missed']} missed by the detector, {unmatched} detections "
          f"matching no annotated face; on the found ones "
          f"NME {100 * result['nme']:.3f}%  FR@0.10 {100 * result['fr']:.2f}%  "
          f"AUC@0.10 {result['auc']:.4f} -> {args.out}")
    if result["regions"]:
        print("  by region, NME (mean offset x, y) in % of the eye distance: " + ", ".join(
            f"{name} {100 * v['nme']:.2f} ({100 * v['offset'][0]:+.1f}, {100 * v['offset'][1]:+.1f})"
            for name, v in result["regions"].items()))
    for name, part in result["attributes"].items():
        if part["nme"] is not None:
            print(f"  {name}: {part['faces']} faces, {part['missed']} missed, "
                  f"NME {100 * part['nme']:.3f}%  FR@0.10 {100 * part['fr']:.2f}%")


if __name__ == "__main__":
    main()
