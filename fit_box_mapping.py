"""Fit the map from the face detector's box to the landmark model's crop.

The landmark model was trained on crops around each face's tight landmark
box (geometry.crop_square). At prediction time only the detector's box is
known, so we learn, on annotated training faces, where the landmark box
sits relative to the detector box: its centre offset in detector-box
widths/heights and its longer side as a multiple of the detector box width
(medians, robust to the odd bad detection). Each detector model gets its
own mapping, written as JSON beside it (NAME.box_mapping.json) and read by
face_detector.FaceDetector; geometry.detector_to_landmark_box applies it.

    python fit_box_mapping.py ../shared/data/300w/helen_trainset ../shared/data/300w/afw
    python fit_box_mapping.py --detector my_blazeface.tflite FOLDER ...
    python fit_box_mapping.py FOLDER ... --profiled tfrecords/profiled.record   # and turned faces
"""
import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

import generate_mesh_dataset as gen
import geometry
from face_detector import DEFAULT_MODELS, FaceDetector, box_mapping_path, iou


SWEEP = (0.3, 0.35, 0.4, 0.45, 0.5)
# Landmark-box widths, as shares of a 640×480 frame, at which size_sweep
# pastes faces: where a detector stops finding faces (face_detector.MIN_FACE_SHARE).
SHARES = (0.08, 0.12, 0.16, 0.2, 0.25)
# --profiled faces: landmark boxes 60-200 px wide in the 640x480 frame.
PROFILED_WIDTHS = (60.0, 200.0)
# Fewer matched faces than this fit no keypoint mapping (14 × 3 weights).
MIN_KEYPOINT_FACES = 100


def profiled_frames(record, count, seed=0, widths=PROFILED_WIDTHS):
    """`count` seeded faces of a profile_faces.py record (turned training
    faces), each in a 640x480 frame (profile_faces.framed) -> [(BGR frame, marks)]."""
    import profile_faces

    try:
        faces = list(profile_faces.read_faces(record))
    except profile_faces.ProfileError as err:      # e.g. a record of 98-point faces
        raise ValueError(f"--profiled: {err}") from None
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(faces), min(count, len(faces)), replace=False))
    frames = []
    for index in chosen:
        frame, marks = profile_faces.framed(faces[index][0], faces[index][1], rng, widths)
        frames.append((frame[:, :, ::-1].copy(), marks))       # RGB records -> BGR
    return frames


def fit(faces, detector, min_iou=0.3, sweep=SWEEP, held_out=frozenset()):
    """faces: generate_mesh_dataset.Face list, or (BGR image, marks) pairs
    -> (mapping dict, stats).

    The mapping is fitted on the detections at the detector's threshold:
    medians of the landmark box's centre offset and side (center_offset,
    side_over_width), and a least-squares linear map from the detector's
    keypoints to the same three numbers (keypoint_weights, used by
    geometry.detector_to_landmark_box). `stats["crop_error"]` compares the
    two on the fitted faces: the predicted landmark box's centre error and
    side error, as shares of the true side (median and 90th percentile).
    Faces whose photo is in `held_out` (resolved paths) are detected and
    counted but not fitted on. `stats["threshold_sweep"]` counts, for each
    score threshold in `sweep` (read from one pass at the lowest), the
    annotated faces no detection
    matches (IoU >= min_iou) and the detections that match no annotated face
    (often real but unannotated faces): how the default threshold was chosen.
    """
    boxes_used, keypoints_used, truths, turned, missed = [], [], [], [], 0
    threshold = detector.threshold
    detector.threshold = min(threshold, *sweep)
    best_scores, unmatched = [], []
    for face in tqdm(faces, desc="detecting", unit="face"):
        if isinstance(face, tuple):             # (BGR frame, marks): a turned training face
            (image, marks), path = face, None
        else:
            marks, path = face.marks, face.image_path
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        truth = geometry.landmark_box(marks)
        detections = detector.detect(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        boxes = np.array([box for box, _, _ in detections]).reshape(-1, 4)
        scores = np.array([score for _, score, _ in detections])
        overlaps = iou(truth, boxes) if len(boxes) else np.zeros(0)
        matches = overlaps >= min_iou
        best_scores.append(scores[matches].max() if matches.any() else 0.0)
        unmatched.extend(scores[~matches])
        usable = matches & (scores >= threshold)
        if not usable.any():
            missed += 1
            continue
        if path is not None and Path(path).resolve() in held_out:
            continue
        best = np.where(usable, overlaps, -1).argmax()
        boxes_used.append(boxes[best])
        keypoints_used.append(detections[best][2])
        truths.append(truth)
        turned.append(path is None)
    detector.threshold = threshold
    if not truths:
        raise ValueError("the detector matched no annotated face")
    # Where each true landmark box sits on its detection: centre offset in
    # box widths and heights, longer side in box widths.
    boxes_used, truths = np.array(boxes_used), np.array(truths)
    sizes = boxes_used[:, 2:] - boxes_used[:, :2]
    offsets = ((truths[:, :2] + truths[:, 2:]) - (boxes_used[:, :2] + boxes_used[:, 2:])) / 2 / sizes
    sides = np.maximum(truths[:, 2] - truths[:, 0], truths[:, 3] - truths[:, 1]) / sizes[:, 0]
    best_scores, unmatched = np.array(best_scores), np.array(unmatched)
    medians = {"center_offset": np.median(offsets, 0).tolist(),
               "side_over_width": float(np.median(sides))}
    mapping, errors = dict(medians), {"medians": crop_error(boxes_used, [None] * len(truths),
                                                            truths, medians)}
    if len(truths) >= MIN_KEYPOINT_FACES:
        mapping["keypoint_weights"] = keypoint_weights(boxes_used, keypoints_used, offsets,
                                                       sides).tolist()
        errors["keypoints"] = crop_error(boxes_used, keypoints_used, truths, mapping)
        turned = np.array(turned)
        if turned.any() and not turned.all():     # the photos' and the turned faces' apart
            for name, rows in (("photos", ~turned), ("profiled", turned)):
                errors[f"keypoints_{name}"] = crop_error(
                    boxes_used[rows], [k for k, r in zip(keypoints_used, rows) if r],
                    truths[rows], mapping)
    else:
        print(f"{detector.path.name}: {len(truths)} matched faces, fewer than "
              f"{MIN_KEYPOINT_FACES}: box medians only, no keypoint mapping")
    stats = {"faces": len(faces), "threshold": threshold, "missed": missed,
             "fitted": len(sides), "held_out": len(faces) - len(sides) - missed,
             "crop_error": errors,
             "side_over_width_iqr": np.percentile(sides, [25, 75]).tolist(),
             "center_offset_iqr": np.percentile(offsets, [25, 75], axis=0).tolist(),
             "threshold_sweep": [{"threshold": t, "missed": int((best_scores < t).sum()),
                                  "unmatched_detections": int((unmatched >= t).sum())}
                                 for t in sweep]}
    return mapping, stats


def keypoint_weights(boxes, keypoints, offsets, sides):
    """Least-squares (14, 3) weights from geometry.keypoint_features of each
    detection to its true landmark box's centre offset (N, 2; in box widths
    and heights) and log side (N; sides in box widths)."""
    features = np.array([geometry.keypoint_features(b, k) for b, k in zip(boxes, keypoints)])
    targets = np.column_stack([offsets, np.log(sides)])
    return np.linalg.lstsq(features, targets, rcond=None)[0]


def crop_error(boxes, keypoints, truths, mapping):
    """Median and 90th percentile of the landmark box's centre error and side
    error, as shares of the true side, when `mapping` predicts it from each
    detector box and its keypoints."""
    errors = []
    for box, points, truth in zip(boxes, keypoints, truths):
        predicted = geometry.detector_to_landmark_box(box, mapping, points)
        side = max(truth[2] - truth[0], truth[3] - truth[1])
        errors.append([np.linalg.norm((predicted[:2] + predicted[2:] - truth[:2] - truth[2:]) / 2)
                       / side, abs((predicted[2] - predicted[0]) / side - 1)])
    errors = np.array(errors)
    return {"centre_median": float(np.median(errors[:, 0])),
            "centre_p90": float(np.percentile(errors[:, 0], 90)),
            "side_median": float(np.median(errors[:, 1])),
            "side_p90": float(np.percentile(errors[:, 1], 90))}


def size_sweep(faces, detector, shares=SHARES, count=200, seed=0, frame=(640, 480), min_iou=0.3):
    """Faces missed when `count` of `faces` (a seeded draw) are scaled so
    their landmark box is each share of the frame width and pasted into the
    top-left of a grey 640×480 frame: [{"share", "faces", "missed"}]."""
    rng = np.random.default_rng(seed)
    chosen = [faces[i] for i in rng.choice(len(faces), min(count, len(faces)), replace=False)]
    missed, used = dict.fromkeys(shares, 0), 0
    for face in tqdm(chosen, desc="size sweep", unit="face"):
        image = cv2.imread(str(face.image_path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        used += 1
        truth = geometry.landmark_box(face.marks)
        for share in shares:
            scale = share * frame[0] / max(truth[2] - truth[0], truth[3] - truth[1])
            small = cv2.resize(image, (max(1, int(image.shape[1] * scale)),
                                       max(1, int(image.shape[0] * scale))),
                               interpolation=cv2.INTER_AREA)[:frame[1], :frame[0]]
            canvas = np.full((frame[1], frame[0], 3), 100, np.uint8)
            canvas[:small.shape[0], :small.shape[1]] = small
            boxes = np.array([box for box, _, _ in detector.detect(
                cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB))]).reshape(-1, 4)
            if not len(boxes) or iou(truth * scale, boxes).max() < min_iou:
                missed[share] += 1
    return [{"share": share, "faces": used, "missed": missed[share]} for share in shares]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", help="300-W style folders (NAME.jpg + NAME.pts)")
    p.add_argument("--detector", nargs="+", default=[str(m) for m in DEFAULT_MODELS],
                   help="BlazeFace .tflite model(s) to fit (default: both bundled ones)")
    p.add_argument("--out_dir", default=None,
                   help="write NAME.box_mapping.json here (default: beside each model)")
    p.add_argument("--exclude", default=None, metavar="SUMMARY_JSON",
                   help="fit the mappings without the test faces of a records summary.json "
                        "(written by generate_mesh_dataset.py), to score the predictor on them; "
                        "they still count in the threshold and size sweeps")
    p.add_argument("--profiled", default=None, metavar="RECORD",
                   help="also fit on turned training faces (profile_faces.py's record), "
                        "so that the crop follows a turned face as it does a frontal one")
    p.add_argument("--profiled_count", type=int, default=1000,
                   help="how many --profiled faces (a seeded draw)")
    args = p.parse_args(argv)
    try:
        faces = [f for folder in args.folders for f in gen.read_300w_dir(folder)]
        fit_faces = list(faces)
        if args.profiled:
            if not Path(args.profiled).is_file():
                raise FileNotFoundError(f"--profiled {args.profiled}: no such file "
                                        f"(make profile writes it)")
            fit_faces += profiled_frames(args.profiled, args.profiled_count)
        held_out = frozenset()
        if args.exclude:
            held_out = frozenset(p.resolve() for p in gen.read_test_sources(args.exclude))
            print(f"the mappings leave out the {len(held_out)} test photos of {args.exclude}")
        for model_path in args.detector:
            detector = FaceDetector(model_path)
            mapping, stats = fit(fit_faces, detector, held_out=held_out)
            stats["size_sweep"] = size_sweep(faces, detector)
            out = box_mapping_path(model_path)
            if args.out_dir:
                out = Path(args.out_dir) / out.name
            out.write_text(json.dumps({**mapping, "detector": Path(model_path).name,
                                       "fitted_on": args.folders, "excluded": args.exclude,
                                       "profiled": args.profiled and {
                                           "record": args.profiled, "faces": args.profiled_count,
                                           "widths": PROFILED_WIDTHS},
                                       **stats}, indent=1))
            errors = ", ".join(f"{e['centre_median']:.4f} by {how}"
                               for how, e in stats["crop_error"].items())
            print(f"{Path(model_path).name}: missed {stats['missed']} of {stats['faces']} at "
                  f"threshold {stats['threshold']}; landmark box centre error (median, share of "
                  f"its side): {errors} -> {out}")
    except (gen.DatasetError, ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
