"""Per-mark confidence from an integral head's score maps, and its check.

A mark is sure where its softmax over the score map is peaked and unsure
where it is spread (geometry.score_spread, in cells). The predictor turns
the spread into a confidence in [0, 1] with a logistic curve in log spread,
fitted here: the probability that the mark lies within 0.1 of the eye-corner
distance of the truth (a "good" mark).

This script scores the landmark model as the predictor runs it (the bundled
int8 pair, or one model with the flip test) on the validation faces, plain and
in every hard-view kind; fits the curve on the even-numbered faces; and on the
odd-numbered ones reports how well low confidence flags bad marks (AUROC) and
how well confidence matches the share of good marks (a reliability plot).

    python confidence.py --record tfrecords/test.record --out results/confidence.json \\
        --plot results/confidence_reliability.png --write_calibration
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

BAD_ERROR = 0.1          # a mark farther than this (x eye-corner distance) is bad
# Without a fitted calibration file: an uncalibrated curve, 0.5 at a spread
# of 1.5 cells, falling as a bad mark's spread grows.
DEFAULT_CALIBRATION = {"slope": 3.0, "centre": float(np.log(1.5))}
BINS = 10


def calibration_path(model_path, pose_model_path=None, second_model_path=None):
    """The calibration file beside a landmark model: NAME.confidence.json;
    for a pair with a large-pose model (predict.py), NAME+POSE_NAME.confidence.json;
    for the ensemble with a second main model, NAME+SECOND_NAME+POSE_NAME.confidence.json
    (SECOND_NAME "flip" where the main model's mirrored look stands in for one)."""
    path = Path(model_path)
    if pose_model_path is not None:
        others = [p for p in (second_model_path, pose_model_path) if p is not None]
        return path.with_name("+".join([path.stem] + [Path(p).stem for p in others])
                              + ".confidence.json")
    return path.with_name(path.stem + ".confidence.json") if path.suffix else path / "confidence.json"


def load_calibration(model_path, pose_model_path=None, second_model_path=None):
    """The fitted curve beside `model_path` (and its pair or ensemble), else DEFAULT_CALIBRATION."""
    path = calibration_path(model_path, pose_model_path, second_model_path)
    if not path.is_file():
        return dict(DEFAULT_CALIBRATION)
    try:
        found = json.loads(path.read_text())
        return {"slope": float(found["slope"]), "centre": float(found["centre"])}
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path} is not a confidence calibration (needs slope and centre); "
                         f"confidence.py --write_calibration writes one") from None


def spread_confidence(spread, calibration):
    """Spread (cells, any shape) -> confidence in [0, 1]."""
    z = calibration["slope"] * (np.log(np.maximum(spread, 1e-3)) - calibration["centre"])
    return 1.0 / (1.0 + np.exp(np.clip(z, -50, 50)))


def fit_calibration(spread, good, steps=50):
    """Logistic regression of good (bool) on log spread, by Newton's method."""
    x = np.log(np.maximum(np.ravel(spread), 1e-3))
    y = np.ravel(good).astype(np.float64)
    w = np.zeros(2)                                   # p = sigmoid(w0 + w1 x)
    design = np.stack([np.ones_like(x), x], 1)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(design @ w, -50, 50)))
        gradient = design.T @ (y - p)
        hessian = (design * (p * (1 - p))[:, None]).T @ design + 1e-9 * np.eye(2)
        w += np.linalg.solve(hessian, gradient)
    # sigmoid(w0 + w1 x) = 1 / (1 + exp(slope (x - centre))) with slope = -w1.
    return {"slope": float(-w[1]), "centre": float(-w[0] / w[1])}


def auroc(scores, positive):
    """Area under the ROC curve of `scores` for `positive` (rank formula, ties averaged)."""
    scores, positive = np.ravel(scores), np.ravel(positive).astype(bool)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2)[inverse]
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if not n_pos or not n_neg:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def reliability(confidence, good, bins=BINS):
    """Rows {low, high, marks, mean_confidence, good_share} per confidence bin."""
    confidence, good = np.ravel(confidence), np.ravel(good)
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence >= low) & ((confidence < high) | (high == 1))
        if inside.any():
            rows.append({"low": float(low), "high": float(high), "marks": int(inside.sum()),
                         "mean_confidence": float(confidence[inside].mean()),
                         "good_share": float(good[inside].mean())})
    return rows


def views_with_truth(record):
    """{view name: (images uint8 (F, 128, 128, 3), marks (F, N, 2))}: the
    plain validation crops and every hard-view kind (profile where the 3D
    model is present)."""
    import keras_env  # noqa: F401  (must precede TensorFlow)
    import dataset
    import hard_view
    from layouts import get_layout

    layout = get_layout(dataset.record_info(record)[0])
    faces = list(dataset._load(record, layout.num_marks).as_numpy_iterator())
    images = [f["image"] for f in faces]
    marks = [f["marks"] for f in faces]
    offset = int(dataset.MODEL_OFFSET)
    views = {"plain": (np.stack([i[offset:offset + 128, offset:offset + 128] for i in images]),
                       np.stack([m - dataset.MODEL_OFFSET for m in marks]))}
    for kind in hard_view.KINDS:
        views[kind] = hard_view.views(images, marks, kind)
    profiled = hard_view.profile_views(images, marks) if layout.num_marks == 68 else None
    if profiled is not None:
        views[hard_view.PROFILE] = profiled
    return views, layout


def measure(spread_fn, record):
    """Per view: spread (F, N) and normalised error (F, N) of every mark."""
    from geometry import MODEL_SIZE

    views, layout = views_with_truth(record)
    out = {}
    for name, (images, truth) in views.items():
        marks, spread = zip(*(spread_fn(images[i:i + 32]) for i in range(0, len(images), 32)))
        if spread[0] is None:
            raise ValueError("the model outputs marks, not score maps: it has no spread")
        pred = np.concatenate(marks).reshape(len(images), -1, 2) * MODEL_SIZE
        eyes = np.linalg.norm(truth[:, layout.eye_corners[0]] - truth[:, layout.eye_corners[1]],
                              axis=-1)
        error = np.linalg.norm(pred - truth, axis=-1) / eyes[:, None]
        out[name] = (np.concatenate(spread), error)
    return out


def summarise(measured, calibration):
    """AUROC of (1 - confidence) for bad marks, per view and pooled, and the
    pooled reliability rows, on the faces given."""
    rows, pooled = {}, ([], [])
    for name, (spread, error) in measured.items():
        confidence = spread_confidence(spread, calibration)
        bad = error > BAD_ERROR
        rows[name] = {"marks": int(bad.size), "bad_share": float(bad.mean()),
                      "auroc": auroc(-confidence, bad),
                      "mean_confidence": float(confidence.mean())}
        pooled[0].append(confidence.ravel())
        pooled[1].append(bad.ravel())
    confidence, bad = np.concatenate(pooled[0]), np.concatenate(pooled[1])
    return {"views": rows, "all": {"marks": int(bad.size), "bad_share": float(bad.mean()),
                                   "auroc": auroc(-confidence, bad)},
            "reliability": reliability(confidence, ~bad)}


def plot(rows, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    axis.plot([r["mean_confidence"] for r in rows], [r["good_share"] for r in rows], "o-",
              label="marks in each confidence bin")
    for r in rows:
        axis.annotate(str(r["marks"]), (r["mean_confidence"], r["good_share"]), fontsize=7,
                      xytext=(3, -9), textcoords="offset points")
    axis.set(xlabel="confidence", ylabel=f"share of marks within {BAD_ERROR} eye distance",
             xlim=(0, 1), ylim=(0, 1.02), title=title)
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main(argv=None):
    from predict import DEFAULT_LANDMARK_MODEL, landmark_spread_functions, settle_pairing

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEFAULT_LANDMARK_MODEL),
                   help="landmark model (.tflite or exported SavedModel folder)")
    p.add_argument("--record", default="tfrecords/test.record")
    p.add_argument("--pose_model", default=None,
                   help="large-pose model paired with --model, as the predictor pairs them "
                        "(default: the bundled one with the bundled --model; 'none': --model alone)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="the flip test (default: as the predictor, on for one model, off for a pair)")
    p.add_argument("--second_model", default=None,
                   help="second main model of the ensemble as the predictor runs it, or 'flip': "
                        "the main model's mirrored look in its place (default: 'flip' with the "
                        "bundled --model; 'none': the pair)")
    p.add_argument("--out", default="results/confidence.json")
    p.add_argument("--plot", default="results/confidence_reliability.png")
    p.add_argument("--write_calibration", action="store_true",
                   help="write the fitted curve beside the model (NAME.confidence.json)")
    args = p.parse_args(argv)
    if not Path(args.record).is_file():
        sys.exit(f"error: --record {args.record}: no such file (make data writes it)")
    bundled = Path(args.model).resolve() == DEFAULT_LANDMARK_MODEL
    try:
        pose_model, args.flip, second = settle_pairing(None if bundled else args.model,
                                                       args.pose_model, args.flip,
                                                       args.second_model)
        args.pose_model = None if pose_model is None else str(pose_model)
        args.second_model = None if second is None else str(second)
        _, spread_fn, _ = landmark_spread_functions(args.model, args.pose_model, args.flip,
                                                    args.second_model)
        measured = measure(spread_fn, args.record)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {args.model}: {err}")
    fit_half = {k: (s[0::2], e[0::2]) for k, (s, e) in measured.items()}
    test_half = {k: (s[1::2], e[1::2]) for k, (s, e) in measured.items()}
    calibration = fit_calibration(np.concatenate([s.ravel() for s, _ in fit_half.values()]),
                                  np.concatenate([e.ravel() for _, e in fit_half.values()])
                                  <= BAD_ERROR)
    result = {"model": args.model, "pose_model": args.pose_model,
              "second_model": args.second_model, "record": args.record,
              "flip_test": args.flip,
              "bad_error": BAD_ERROR, "calibration": calibration,
              "fitted_on": "even-numbered validation faces, plain and every hard-view kind",
              "scored_on": "odd-numbered validation faces",
              **summarise(test_half, calibration)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    plot(result["reliability"], args.plot,
         f"{Path(args.model).name}: AUROC {result['all']['auroc']:.3f}")
    print(f"confidence of {args.model}: AUROC for marks > {BAD_ERROR} eye distance "
          f"{result['all']['auroc']:.3f} ({result['all']['marks']} marks, "
          f"{100 * result['all']['bad_share']:.1f}% bad); per view: "
          + ", ".join(f"{k} {v['auroc']:.3f}" for k, v in result["views"].items()))
    print(f"wrote {args.out} and {args.plot}")
    if args.write_calibration:
        target = calibration_path(args.model, args.pose_model, args.second_model)
        target.write_text(json.dumps({**calibration, "fitted_by": "confidence.py",
                                      "record": args.record,
                                      "flip_test": args.flip}, indent=1))
        print(f"calibration: {target}")


if __name__ == "__main__":
    main()
