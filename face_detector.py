"""MediaPipe BlazeFace face detection, run with LiteRT.

Two model files from the mediapipe 0.10.21 wheel (Apache-2.0; see assets/):
`face_detection_short_range.tflite` (128×128 input, faces that fill a fair
part of the photo, ~2 ms) and `face_detection_full_range_sparse.tflite`
(192×192, small faces too, ~6 ms). The predictor runs the short-range model
and falls back to the full-range one when it finds no face or a face small
enough that others in the photo may be below its reach (MIN_FACE_SHARE).
MediaPipe's
graph around the models (anchors, box decoding, weighted non-maximum
suppression) is written here:

- anchors (SSD anchor options, fixed anchor size, offset 0.5): full range,
  one per cell of a 48×48 grid (stride 4); short range, 2 per cell of a
  16×16 grid (stride 8) then 6 per cell of an 8×8 grid (stride 16);
- decoding: box centre = anchor + raw / S, size = raw / S for an S×S input;
  score = sigmoid of the clipped logit;
- the image is letterboxed (zero-padded to a square) before resizing, so
  boxes map back to any image size.

Each model has its detection -> landmark-crop mapping beside it
(`NAME.box_mapping.json`, written by fit_box_mapping.py): a linear map from
the box and BlazeFace's six keypoints (eyes, nose tip, mouth, ears) to the
landmark box, with fixed box medians as the fallback.
"""
import json
from pathlib import Path

import cv2
import numpy as np

import geometry
from tflite_model import TFLiteModel

ASSETS = Path(__file__).resolve().parent / "assets"
SHORT_RANGE = ASSETS / "face_detection_short_range.tflite"
FULL_RANGE = ASSETS / "face_detection_full_range_sparse.tflite"
DEFAULT_MODELS = (SHORT_RANGE, FULL_RANGE)   # tried in this order
# (stride, anchors per cell) of each BlazeFace model, by its input size.
ANCHOR_LAYOUTS = {128: ((8, 2), (16, 6)), 192: ((4, 1),)}
# Score thresholds, chosen on the 1,207 annotated 300-W faces in ../shared:
# `fit_box_mapping.py` writes, per threshold, the faces missed and the boxes
# matching no annotated face (often real, unannotated neighbours) beside
# each model ("threshold_sweep"). Full range: 0.35 keeps misses well under
# 1% for a few more such boxes than 0.4. Short range: no face is missed at
# any threshold tried, so MediaPipe's own 0.5, with the fewest such boxes.
DEFAULT_THRESHOLDS = {128: 0.5, 192: 0.35}
# Faces narrower than this share of the photo's longer side make a model's
# detections untrusted (detect_faces then asks the next model). From the
# "size_sweep" fit_box_mapping.py writes beside each model: 200 of the shared
# faces pasted into 640×480 frames at a landmark-box width of 0.08 / 0.12 /
# 0.16 / 0.20 of the frame were missed 199 / 44 / 1 / 0 times by the
# short-range model and 8 / 2 / 0 / 0 times by the full-range one.
MIN_FACE_SHARE = {128: 0.2, 192: 0.0}
SCORE_CLIP = 100.0
NMS_IOU = 0.3
# Small faces in large photos. The full-range model sees a photo shrunk to
# 192 px, so a face under about a tenth of the photo's longer side is often
# missed (MIN_FACE_SHARE's sweep). In photos whose longer side exceeds
# TILE_ABOVE, detect_faces also runs it on overlapping squares of TILE px
# (or a third of the longer side, if more: at most about 4x4 squares) and
# adds the faces none of the whole-photo faces covers. On the validation
# photos shrunk so the face is 30-80 px wide in a 1024x768 frame this took
# the faces missed from 41 to 0 of 201 (`make evaluate-small`:
# results/predictor_eval_small*.json). A square's threshold is higher:
# upscaled flat texture scored 0.35-0.48 there.
TILE = 384
TILE_OVERLAP = 0.25
TILE_ABOVE = 800
TILE_THRESHOLD = 0.5


def anchors(input_size=192, layout=None):
    """(K, 2) anchor centres in [0, 1]: per layer of `layout` ((stride,
    anchors per cell), ...; default the model's), row-major over its grid,
    each cell's anchors together."""
    layers = []
    for stride, per_cell in layout or ANCHOR_LAYOUTS[input_size]:
        cells = input_size // stride
        centres = (np.arange(cells) + 0.5) / cells
        ys, xs = np.meshgrid(centres, centres, indexing="ij")
        layers.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], -1), per_cell, axis=0))
    return np.concatenate(layers)


def box_mapping_path(model_path):
    """Where the detector-box -> landmark-crop mapping of a model lives."""
    return Path(model_path).with_suffix(".box_mapping.json")


def decode(raw_boxes, raw_scores, anchor_centres, input_size=192):
    """Raw outputs (K, 16), (K,) -> boxes (K, 4) as x0, y0, x1, y1 in [0, 1]
    of the model input, scores (K,) in [0, 1], and the six keypoints (K, 6, 2)
    as x, y in [0, 1] (BlazeFace's order: right eye, left eye, nose tip,
    mouth, right ear, left ear, the subject's sides)."""
    centre = anchor_centres + raw_boxes[:, :2] / input_size
    half = raw_boxes[:, 2:4] / input_size / 2
    boxes = np.concatenate([centre - half, centre + half], -1)
    keypoints = anchor_centres[:, None] + raw_boxes[:, 4:16].reshape(-1, 6, 2) / input_size
    logits = np.clip(np.asarray(raw_scores, np.float64), -SCORE_CLIP, SCORE_CLIP)
    scores = 1 / (1 + np.exp(-logits))
    return boxes, scores, keypoints


def _area(boxes):
    return np.prod(boxes[..., 2:] - boxes[..., :2], axis=-1)


def _intersection(box, boxes):
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    return np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)


def iou(box, boxes):
    """Intersection over union of one box with each of `boxes`."""
    inter = _intersection(box, boxes)
    return inter / (_area(box) + _area(boxes) - inter + 1e-12)


def weighted_nms(boxes, scores, iou_threshold=NMS_IOU):
    """MediaPipe's weighted non-maximum suppression: each kept detection is
    the score-weighted mean of the boxes overlapping the best remaining one,
    with that best score. `boxes` (K, 4 + D): the overlap is that of the
    first four columns (x0, y0, x1, y1); every column is averaged (keypoints
    too, as MediaPipe does). Returns (boxes (M, 4 + D), scores (M,))."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    kept_boxes, kept_scores = [], []
    while len(boxes):
        overlap = iou(boxes[0, :4], boxes[:, :4]) > iou_threshold
        overlap[0] = True   # even a degenerate (zero-area or NaN) box leaves the queue
        weights = scores[overlap][:, None]
        kept_boxes.append((boxes[overlap] * weights).sum(0) / weights.sum())
        kept_scores.append(scores[0])
        boxes, scores = boxes[~overlap], scores[~overlap]
    return np.array(kept_boxes).reshape(-1, boxes.shape[1]), np.array(kept_scores)


def letterbox(image, size=192):
    """Fit an image into a size² patch (top-left, zero padding bottom/right);
    returns the patch and the factor from patch pixels to image pixels.

    Halves the image with pixel averaging while it is at least twice the
    patch (OpenCV's 2x area resize has a fast path: two halvings take ~0.15
    ms on a 640×480 frame, one area resize by 5 ~0.6 ms), then resizes
    bilinearly by less than 2x, as MediaPipe resizes.
    """
    halvings = 0
    while max(image.shape[:2]) >= 2 * size and min(image.shape[:2]) >= 2:
        height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        image = cv2.resize(image[:height, :width], (width // 2, height // 2),
                           interpolation=cv2.INTER_AREA)
        halvings += 1
    scale = size / max(image.shape[:2])
    fitted = cv2.resize(image, (min(size, max(1, round(image.shape[1] * scale))),
                                min(size, max(1, round(image.shape[0] * scale)))),
                        interpolation=cv2.INTER_LINEAR)
    patch = np.zeros((size, size, 3), image.dtype)
    patch[:fitted.shape[0], :fitted.shape[1]] = fitted
    return patch, 2 ** halvings / scale


class FaceDetector:
    """detect(RGB uint8 image) -> list of (box x0, y0, x1, y1 in pixels, score,
    keypoints (6, 2) x, y in pixels; see decode).

    `threshold` None means the model's default (DEFAULT_THRESHOLDS)."""

    def __init__(self, model_path=FULL_RANGE, threshold=None, num_threads=1):
        self.path = Path(model_path)
        self.model = TFLiteModel(self.path, num_threads)
        self.input_size = self.model.input_size
        if self.input_size not in ANCHOR_LAYOUTS:
            raise ValueError(f"{self.path}: a {self.input_size}×{self.input_size} input is not a "
                             f"BlazeFace model decoded here (128: short range, 192: full range)")
        threshold = DEFAULT_THRESHOLDS[self.input_size] if threshold is None else threshold
        if not 0 < threshold < 1:
            raise ValueError(f"face detector threshold must be between 0 and 1, got {threshold}")
        self.threshold = threshold
        self.anchor_centres = anchors(self.input_size)
        outputs = {tuple(d["shape"]): d["index"] for d in self.model.interpreter.get_output_details()}
        count = len(self.anchor_centres)
        if set(outputs) != {(1, count, 16), (1, count, 1)}:
            raise ValueError(f"{self.path} is not a BlazeFace detector: outputs {sorted(outputs)}, "
                             f"expected (1, {count}, 16) boxes and (1, {count}, 1) scores")
        self.boxes_index, self.scores_index = outputs[(1, count, 16)], outputs[(1, count, 1)]
        mapping = box_mapping_path(self.path)
        self.box_mapping = json.loads(mapping.read_text()) if mapping.is_file() else None
        if self.box_mapping and "keypoint_weights" in self.box_mapping:
            # An array once here, not a list converted again for every face.
            self.box_mapping["keypoint_weights"] = np.asarray(self.box_mapping["keypoint_weights"])
        # The model input, filled in place each call rather than allocated
        # anew for every frame (the predictor calls detect once a frame).
        self.input_buffer = np.empty((1, self.input_size, self.input_size, 3), np.float32)

    def detect(self, rgb, threshold=None):
        """`threshold` None: the detector's own."""
        threshold = self.threshold if threshold is None else threshold
        patch, factor = letterbox(rgb, self.input_size)
        interpreter = self.model.interpreter
        with self.model.lock:   # the buffer and the interpreter are shared
            data = self.input_buffer
            np.multiply(patch, np.float32(1 / 127.5), out=data[0])   # BlazeFace takes [-1, 1]
            data -= 1.0
            interpreter.set_tensor(self.model.input["index"], data)
            interpreter.invoke()
            raw_boxes = interpreter.get_tensor(self.boxes_index)[0]
            raw_scores = interpreter.get_tensor(self.scores_index)[0, :, 0]
        # Decode only the anchors above the threshold (a sigmoid is monotonic).
        keep = np.clip(raw_scores, -SCORE_CLIP, SCORE_CLIP) >= np.log(threshold / (1 - threshold))
        boxes, scores, keypoints = decode(raw_boxes[keep], raw_scores[keep],
                                          self.anchor_centres[keep], self.input_size)
        merged, scores = weighted_nms(np.concatenate([boxes, keypoints.reshape(-1, 12)], 1), scores)
        merged *= self.input_size * factor
        height, width = rgb.shape[:2]
        boxes = np.clip(merged[:, :4], 0, [width, height, width, height])
        return [(box, float(score), points.reshape(6, 2))
                for box, score, points in zip(boxes, scores, merged[:, 4:])
                if box[2] > box[0] and box[3] > box[1]]

    def detect_tiles(self, rgb, tile=TILE, threshold=TILE_THRESHOLD):
        """detect() on overlapping squares of `tile` px (tile_corners), in
        image pixels, merged by weighted NMS. A detection touching a square's
        edge inside the photo is a face cut by it and is left out: a face
        narrower than the overlap lies whole inside another square."""
        height, width = rgb.shape[:2]
        rows, scores = [], []
        for x, y in tile_corners((height, width), tile):
            square = rgb[y:y + tile, x:x + tile]
            inner = np.array([x > 0, y > 0, x + tile < width, y + tile < height])
            for box, score, points in self.detect(square, threshold):
                edges = np.array([box[0], box[1], square.shape[1] - box[2],
                                  square.shape[0] - box[3]]) < 2
                if np.any(edges & inner):
                    continue
                rows.append(np.r_[box + [x, y, x, y], (points + [x, y]).ravel()])
                scores.append(score)
        if not rows:
            return []
        merged, scores = weighted_nms(np.array(rows), np.array(scores))
        return [(row[:4], float(score), row[4:].reshape(6, 2)) for row, score in zip(merged, scores)]

    def faces(self, rgb, tiled=False):
        """detect() (or detect_tiles() if `tiled`), each with the landmark
        box its mapping predicts from the box and keypoints: [(box, score,
        landmark box)]."""
        if self.box_mapping is None:
            raise FileNotFoundError(
                f"no box mapping for {self.path} (expected {box_mapping_path(self.path)}); "
                f"write it with: python fit_box_mapping.py --detector {self.path} FOLDER ...")
        found = self.detect_tiles(rgb, tile_side(rgb.shape)) if tiled else self.detect(rgb)
        return [(box, score, geometry.detector_to_landmark_box(box, self.box_mapping, keypoints))
                for box, score, keypoints in found]


def tile_side(shape, tile=TILE):
    """The squares' side for a photo of `shape`: TILE, or a third of its
    longer side if more, so a large photo takes at most about 4x4."""
    return max(tile, int(np.ceil(max(shape[:2]) / 3)))


def tile_corners(shape, tile):
    """Top-left (x, y) of squares of side `tile` covering an image of
    `shape`, neighbours overlapping by at least TILE_OVERLAP of a side."""
    def starts(length):
        if length <= tile:
            return [0]
        count = int(np.ceil((length - tile) / (tile * (1 - TILE_OVERLAP)))) + 1
        return np.linspace(0, length - tile, count).round().astype(int).tolist()
    return [(x, y) for y in starts(shape[0]) for x in starts(shape[1])]


def covered(box, boxes):
    """Whether `box` and any of `boxes` share over half the smaller one's
    area (a face found twice, or found in part)."""
    if not len(boxes):
        return False
    box, boxes = np.asarray(box, np.float64), np.asarray(boxes, np.float64).reshape(-1, 4)
    return bool(np.any(_intersection(box, boxes) > 0.5 * np.minimum(_area(box), _area(boxes))))


def _with_uncovered(found, earlier):
    """`found`, plus the faces of `earlier` that none of them covers."""
    boxes = [box for box, _, _ in found]
    return found + [face for face in earlier if not covered(face[0], boxes)]


def detect_faces(detectors, rgb, small_faces=False):
    """([(box, score, landmark box)], the last detector asked): `detectors`
    are asked in order until one finds faces none of which is narrower than
    its MIN_FACE_SHARE of the photo (the last one's are taken as they are).
    A face an earlier detector found and a later one missed is kept: the
    short-range model finds some turned faces the full-range one does not
    (3 of the 17 turned validation faces missed end to end). With
    `small_faces`, a photo whose longer side exceeds TILE_ABOVE, or one
    over TILE px where no face was found, is also searched in squares by
    the last detector, and the faces found there that no face already
    found covers are added."""
    found, detector = [], None
    for detector in detectors:
        earlier, found = found, detector.faces(rgb)
        smallest = min((box[2] - box[0] for box, _, _ in found), default=0.0)
        trusted = found and smallest >= MIN_FACE_SHARE[detector.input_size] * max(rgb.shape[:2])
        found = _with_uncovered(found, earlier)
        if trusted:
            break
    side = max(rgb.shape[:2])
    if small_faces and (side > TILE_ABOVE or (not found and side > TILE)):
        found = _with_uncovered(found, detectors[-1].faces(rgb, tiled=True))
    return found, detector
