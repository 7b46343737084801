"""Face crops: from a face's box to the square the network sees, and back.

Training and prediction share these functions, so the crop a model learnt on
is the crop it is asked about. Coordinates put pixel centres on integers
(OpenCV's convention); a crop transform is (scale, x_offset, y_offset) with
  image_xy = crop_xy * scale + offset.
"""
import functools

import cv2
import numpy as np

# The network's square is CROP_SCALE times the longer side of the face's
# tight landmark box, centred on the box.
CROP_SCALE = 1.3
# Records store a wider square (STORE_FACTOR times the network's) so that
# rotation, scaling and translation during training never run out of pixels.
STORE_FACTOR = 1.5
MODEL_SIZE = 128
STORE_SIZE = int(round(MODEL_SIZE * STORE_FACTOR))  # 192


def landmark_box(marks):
    """Tight box (x0, y0, x1, y1) around a face's marks."""
    marks = np.asarray(marks, np.float64)
    return np.array([*marks.min(axis=0), *marks.max(axis=0)])


# A face whose marks come out further than this share of the crop's side
# from the centre of the box they were marked from (off_centre) is marked
# again from a crop on its marks, as training's crops were placed: a
# detector box that missed a turned face, or a tracked face that moved
# faster than its crop foresaw (predict.py, tracking.py).
RECROP_SHIFT = 0.08


def off_centre(marks, box):
    """How far the landmark box of `marks` lies from the centre of the
    landmark box `box` they were marked from, as a share of its longer side."""
    found, box = landmark_box(marks), np.asarray(box, np.float64)
    side = max(box[2] - box[0], box[3] - box[1])
    return float(np.linalg.norm((found[:2] + found[2:] - box[:2] - box[2:]) / 2) / side)


def crop_square(box, scale=CROP_SCALE):
    """Centre and side of the square the network sees for a face `box`."""
    x0, y0, x1, y1 = np.asarray(box, np.float64)
    side = max(x1 - x0, y1 - y0, 1.0) * scale
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), side


def crop(image, center, side, out_size):
    """Resample the square (`center`, `side`) of `image` to out_size².

    Pixels outside the image are zero. Returns (crop, transform) where
    transform maps crop pixels back to image pixels.
    """
    scale = side / out_size
    # Crop pixel u covers [edge + u*scale, edge + (u+1)*scale) in the image,
    # so its centre sits at u*scale + edge + scale/2.
    offset = np.asarray(center, np.float64) - side / 2 + scale / 2 - 0.5
    transform = np.array([scale, offset[0], offset[1]])
    source, origin = image, np.zeros(2)
    if scale > 1.5:
        # Bilinear sampling aliases when shrinking; blur away what the crop
        # cannot represent first. Only the part the crop reads is blurred:
        # a margin wider than the kernel (OpenCV's radius is 3 sigma for
        # uint8, 4 sigma for float) leaves every sampled pixel as a blur of
        # the whole image would (the image's own edges are edges in both).
        sigma = 0.5 * np.sqrt(scale ** 2 - 1)
        margin = int(np.ceil(4 * sigma)) + 2
        x0, y0 = np.floor(offset - margin).astype(int).clip(0, None)
        x1, y1 = np.minimum(np.ceil(offset + scale * out_size + margin).astype(int),
                            image.shape[1::-1])
        if x1 - x0 < 1 or y1 - y0 < 1:   # the crop misses the image: all zeros
            return np.zeros((out_size, out_size) + image.shape[2:], image.dtype), transform
        source = cv2.GaussianBlur(image[y0:y1, x0:x1], (0, 0), sigma)
        origin = np.array([x0, y0], np.float64)
    shifted = offset - origin
    matrix = np.array([[scale, 0, shifted[0]], [0, scale, shifted[1]]])
    patch = cv2.warpAffine(source, matrix, (out_size, out_size),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return patch, transform


def _split(transform):
    """(3,) or (F, 3) transforms -> scale and offset that broadcast on marks."""
    transform = np.asarray(transform, np.float64)
    return transform[..., 0][..., None, None], transform[..., None, 1:]


def to_crop(marks, transform):
    """Image pixels -> crop pixels (marks (N, 2) or (F, N, 2))."""
    scale, offset = _split(transform)
    return (np.asarray(marks, np.float64) - offset) / scale


def to_image(marks, transform):
    """Crop pixels -> image pixels (marks (N, 2) or (F, N, 2))."""
    scale, offset = _split(transform)
    return np.asarray(marks, np.float64) * scale + offset


def keypoint_features(box, keypoints):
    """The inputs of a keypoint mapping: the detector's keypoints relative to
    its box centre in box widths (flattened), the box's height / width, 1."""
    x0, y0, x1, y1 = np.asarray(box, np.float64)
    centre, width = np.array([x0 + x1, y0 + y1]) / 2, x1 - x0
    relative = (np.asarray(keypoints, np.float64).reshape(-1, 2) - centre) / width
    return np.concatenate([relative.ravel(), [(y1 - y0) / width, 1.0]])


def detector_to_landmark_box(box, mapping, keypoints=None):
    """A face detector's box (and keypoints) -> the landmark box it predicts
    (a square). Feed the result to crop_square, as training does with the
    true landmark box.

    `mapping` (fitted by fit_box_mapping.py) gives the landmark box's centre
    offset from the box centre in box widths and heights, and the log of its
    side in box widths: as fixed medians (center_offset, side_over_width),
    or, where it has `keypoint_weights` and keypoints are given, as a linear
    function of keypoint_features.
    """
    x0, y0, x1, y1 = np.asarray(box, np.float64)
    width, height = x1 - x0, y1 - y0
    if keypoints is not None and "keypoint_weights" in mapping:
        dx, dy, log_side = keypoint_features(box, keypoints) @ np.asarray(mapping["keypoint_weights"])
        side = np.exp(log_side) * width
    else:
        (dx, dy), side = mapping["center_offset"], mapping["side_over_width"] * width
    cx, cy = (x0 + x1) / 2 + dx * width, (y0 + y1) / 2 + dy * height
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


@functools.lru_cache(maxsize=None)
def cell_centres(cells_per_side):
    """(cells², 2): (x, y) of each cell's centre as a fraction of the map,
    cells in row-major order. Cached: the predictor decodes every face with
    it (read-only)."""
    index = np.arange(cells_per_side * cells_per_side)
    centres = np.stack([index % cells_per_side, index // cells_per_side], 1).astype(
        np.float32) / cells_per_side + 0.5 / cells_per_side
    centres.setflags(write=False)
    return centres


def cell_weights(outputs):
    """(B, h, h, N) score maps -> (B, h², N): each mark's softmax over the
    cells, in cell_centres' order."""
    batch, side, _, num_marks = outputs.shape
    logits = outputs.reshape(batch, side * side, num_marks)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


def score_spread(outputs, weights=None):
    """(B, h, h, N) score maps -> (B, N) spread of each mark's softmax over
    the cells: the root of the summed x and y variances, in cells. A map
    concentrated on one cell spreads 0; a uniform one about 0.41 h.
    `weights`: cell_weights(outputs), if the caller has them already."""
    outputs = np.asarray(outputs, np.float32)
    weights = cell_weights(outputs) if weights is None else weights
    weights, side = weights.transpose(0, 2, 1), outputs.shape[1]                 # (B, N, C)
    centres = cell_centres(side) * side                                           # (C, 2), cells
    # Matmuls (BLAS), as decode_scores: the predictor pays this every face.
    mean = np.matmul(weights, centres)
    squares = np.matmul(weights, centres ** 2)
    return np.sqrt(np.maximum(squares - mean ** 2, 0).sum(axis=-1)).astype(np.float64)


def decode_scores(outputs, weights=None):
    """A model's raw outputs -> (B, 2N) marks. (B, 2N) passes through;
    (B, h, h, N) score maps become each mark's expected cell centre under a
    softmax over the cells, as network's integral head computes in the graph.
    `weights`: cell_weights(outputs), if the caller has them already."""
    outputs = np.asarray(outputs, np.float32)
    if outputs.ndim == 2:
        return outputs
    if outputs.ndim != 4 or outputs.shape[1] != outputs.shape[2]:
        raise ValueError(f"model output of shape {outputs.shape} is neither (B, 2N) marks "
                         "nor (B, h, h, N) score maps")
    batch, side, _, num_marks = outputs.shape
    # (B, N, C) @ (C, 2) as a matmul (BLAS), not np.einsum, whose default
    # path loops in its own C code: the predictor pays this every face.
    weights = cell_weights(outputs) if weights is None else weights
    xy = np.matmul(weights.transpose(0, 2, 1), cell_centres(side))
    return xy.reshape(batch, num_marks * 2)
