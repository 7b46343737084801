"""MediaPipe BlazeFace (full range) face detection, run with LiteRT.

The model file is MediaPipe's `face_detection_full_range_sparse.tflite`
(Apache-2.0, from the mediapipe 0.10.21 wheel; see assets/). MediaPipe's
graph around it (anchors, box decoding, weighted non-maximum suppression)
is written here:

- anchors: one per cell of a 48×48 grid over the 192×192 input (SSD anchor
  options: one layer, stride 4, fixed anchor size, offset 0.5);
- decoding: box centre = anchor + raw / 192, size = raw / 192; score =
  sigmoid of the clipped logit;
- the image is letterboxed (zero-padded to a square) before resizing, so
  boxes map back to any image size.
"""
from pathlib import Path

import cv2
import numpy as np

from tflite_model import TFLiteModel

DEFAULT_MODEL = Path(__file__).resolve().parent / "assets" / "face_detection_full_range_sparse.tflite"
INPUT_SIZE = 192
STRIDE = 4
SCORE_CLIP = 100.0
NMS_IOU = 0.3
# Score threshold, measured on the 1,207 annotated 300-W faces in ../shared:
# 0.5 missed 21 faces (1.7%), 0.4 missed 7 (0.6%) for 27 boxes that match no
# annotated face (often real, unannotated neighbours), 0.3 missed 3 for 36.
DEFAULT_THRESHOLD = 0.4


def anchors(input_size=INPUT_SIZE, stride=STRIDE):
    """(K, 2) anchor centres in [0, 1], row-major over the grid."""
    cells = input_size // stride
    centres = (np.arange(cells) + 0.5) / cells
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], -1)


def decode(raw_boxes, raw_scores, anchor_centres, input_size=INPUT_SIZE):
    """Raw outputs (K, 16), (K,) -> boxes (K, 4) as x0, y0, x1, y1 in [0, 1]
    of the model input, and scores (K,) in [0, 1]."""
    centre = anchor_centres + raw_boxes[:, :2] / input_size
    half = raw_boxes[:, 2:4] / input_size / 2
    boxes = np.concatenate([centre - half, centre + half], -1)
    logits = np.clip(np.asarray(raw_scores, np.float64), -SCORE_CLIP, SCORE_CLIP)
    scores = 1 / (1 + np.exp(-logits))
    return boxes, scores


def iou(box, boxes):
    """Intersection over union of one box with each of `boxes`."""
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], axis=-1)  # noqa: E731
    return inter / (area(box) + area(boxes) - inter + 1e-12)


def weighted_nms(boxes, scores, iou_threshold=NMS_IOU):
    """MediaPipe's weighted non-maximum suppression: each kept detection is
    the score-weighted mean of the boxes overlapping the best remaining one,
    with that best score. Returns (boxes (M, 4), scores (M,))."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    kept_boxes, kept_scores = [], []
    while len(boxes):
        overlap = iou(boxes[0], boxes) > iou_threshold
        weights = scores[overlap][:, None]
        kept_boxes.append((boxes[overlap] * weights).sum(0) / weights.sum())
        kept_scores.append(scores[0])
        boxes, scores = boxes[~overlap], scores[~overlap]
    return np.array(kept_boxes).reshape(-1, 4), np.array(kept_scores)


def letterbox(image, size=INPUT_SIZE):
    """Pad an image to a square (bottom/right) and resize it to size²;
    returns the patch and the factor from patch pixels to image pixels."""
    height, width = image.shape[:2]
    side = max(height, width)
    square = np.zeros((side, side, 3), image.dtype)
    square[:height, :width] = image
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA), side / size


class FaceDetector:
    """detect(RGB uint8 image) -> list of (box x0, y0, x1, y1 in pixels, score)."""

    def __init__(self, model_path=None, threshold=DEFAULT_THRESHOLD, num_threads=1):
        self.model = TFLiteModel(model_path or DEFAULT_MODEL, num_threads)
        self.threshold = threshold
        self.anchor_centres = anchors()

    def detect(self, rgb):
        patch, factor = letterbox(rgb)
        data = patch.astype(np.float32) / 127.5 - 1.0   # BlazeFace takes [-1, 1]
        interpreter = self.model.interpreter
        interpreter.set_tensor(self.model.input["index"], data[None])
        interpreter.invoke()
        outputs = {tuple(d["shape"]): interpreter.get_tensor(d["index"])[0]
                   for d in interpreter.get_output_details()}
        raw_boxes = outputs[(1, len(self.anchor_centres), 16)]
        raw_scores = outputs[(1, len(self.anchor_centres), 1)][:, 0]
        boxes, scores = decode(raw_boxes, raw_scores, self.anchor_centres)
        keep = scores >= self.threshold
        boxes, scores = weighted_nms(boxes[keep], scores[keep])
        height, width = rgb.shape[:2]
        boxes = np.clip(boxes * INPUT_SIZE * factor, 0, [width, height, width, height])
        return [(box, float(score)) for box, score in zip(boxes, scores)
                if box[2] > box[0] and box[3] > box[1]]
