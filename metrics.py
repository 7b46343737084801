"""The field's landmark metrics, as small numpy functions.

NME: mean point-to-point error of a face divided by the distance between its
two outer eye corners (ground truth). FR@t: the share of faces whose NME is
above t. AUC@t: area under the cumulative error distribution (CED) from 0 to
t, divided by t (1.0 is perfect).
"""
import numpy as np

FAILURE_THRESHOLD = 0.10


def mark_errors(pred, true, eye_corners):
    """(F, N, 2), (F, N, 2) -> (F, N) each mark's error over its face's
    (true) eye-corner distance."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    left, right = eye_corners
    norm = np.linalg.norm(true[:, left] - true[:, right], axis=-1)
    return np.linalg.norm(pred - true, axis=-1) / norm[:, None]


def nme_per_face(pred, true, eye_corners):
    """(F, N, 2), (F, N, 2) -> (F,) normalised mean error of each face."""
    return mark_errors(pred, true, eye_corners).mean(axis=-1)


def region_errors(pred, true, eye_corners, regions):
    """Each region's share of the error: {region: {"nme": mean error of its
    marks over eye distance, "share": its part of the faces' summed error}}.
    `regions` is a layout's ((name, mark indices), ...)."""
    errors = mark_errors(pred, true, eye_corners)
    total = errors.sum()
    return {name: {"nme": float(errors[:, list(marks)].mean()),
                   "share": float(errors[:, list(marks)].sum() / total)}
            for name, marks in regions}


def ced(nmes, threshold=FAILURE_THRESHOLD, steps=1001):
    """Cumulative error distribution: (thresholds, share of faces <= each)."""
    nmes = np.sort(np.asarray(nmes, np.float64))
    xs = np.linspace(0.0, threshold, steps)
    return xs, np.searchsorted(nmes, xs, side="right") / len(nmes)


def failure_rate(nmes, threshold=FAILURE_THRESHOLD):
    return float(np.mean(np.asarray(nmes) > threshold))


def auc(nmes, threshold=FAILURE_THRESHOLD, steps=1001):
    xs, ys = ced(nmes, threshold, steps)
    return float(np.trapezoid(ys, xs) / threshold)


def summarize(nmes):
    """nme, fr and auc of a set of per-face NMEs, as plain floats."""
    return {"nme": float(np.mean(nmes)), "fr": failure_rate(nmes), "auc": auc(nmes)}
