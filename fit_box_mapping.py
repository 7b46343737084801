"""Fit the map from the face detector's box to the landmark model's crop.

The landmark model was trained on crops around each face's tight landmark
box (geometry.crop_square). At prediction time only the detector's box is
known, so we learn, on annotated training faces, where the landmark box
sits relative to the detector box: its centre offset in detector-box
widths/heights and its longer side as a multiple of the detector box width
(medians, robust to the odd bad detection). The result is written as JSON
and read by predict.py; geometry.detector_to_landmark_box applies it.

    python fit_box_mapping.py ../shared/data/300w/helen_trainset ../shared/data/300w/afw
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
from face_detector import FaceDetector, iou

DEFAULT_OUT = Path(__file__).resolve().parent / "assets" / "box_mapping.json"


def fit(faces, detector, min_iou=0.3):
    """faces: generate_mesh_dataset.Face list -> (mapping dict, stats)."""
    offsets, sides, missed = [], [], 0
    for face in tqdm(faces, desc="detecting", unit="face"):
        image = cv2.imread(str(face.image_path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        truth = geometry.landmark_box(face.marks)
        detections = detector.detect(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        if not detections:
            missed += 1
            continue
        boxes = np.array([box for box, _ in detections])
        overlaps = iou(truth, boxes)
        if overlaps.max() < min_iou:
            missed += 1
            continue
        box = boxes[overlaps.argmax()]
        size = box[2:] - box[:2]
        offsets.append(((truth[:2] + truth[2:]) - (box[:2] + box[2:])) / 2 / size)
        sides.append(max(truth[2] - truth[0], truth[3] - truth[1]) / size[0])
    if not offsets:
        raise ValueError("the detector matched no annotated face")
    offsets, sides = np.array(offsets), np.array(sides)
    mapping = {"center_offset": np.median(offsets, 0).tolist(),
               "side_over_width": float(np.median(sides))}
    stats = {"faces": len(faces), "matched": len(sides), "missed": missed,
             "side_over_width_iqr": np.percentile(sides, [25, 75]).tolist(),
             "center_offset_iqr": np.percentile(offsets, [25, 75], axis=0).tolist()}
    return mapping, stats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", help="300-W style folders (NAME.jpg + NAME.pts)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    args = p.parse_args(argv)
    try:
        faces = [f for folder in args.folders for f in gen.read_300w_dir(folder)]
        mapping, stats = fit(faces, FaceDetector())
    except (gen.DatasetError, ValueError) as err:
        sys.exit(f"error: {err}")
    Path(args.out).write_text(json.dumps({**mapping, "fitted_on": args.folders, **stats}, indent=1))
    print(json.dumps(mapping), stats)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
