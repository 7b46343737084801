"""Where the ensemble's gate should sit: the predictor's way
(layouts.ensembled with the main model's mirrored look) scored on the
validation crops for a grid of gates, turned_faces()'s two thresholds
(the main model's yaw estimate, degrees, and the mean log spread of its
maps). A face turned beyond the yaw goes the pair's way with the
large-pose model, one only unsure where the large-pose model claims it
(its maps sharper); every other face fuses the main model with its
mirrored look. BEFORE is the gate until 2026-12-07 (20 degrees, 0.65,
every unsure face sent on), the reference of every difference.

Views: the plain crops, every hard-view kind, the profile kind (50-75
degrees of yaw) and `turned`, the same validation faces turned in 3D to
TURNED_RANGE degrees, the moderate turns where a gate decides most. The
gate is chosen on the even-numbered faces: the lowest mean NME over
every view but profile, among the gates whose profile NME is no worse
than BEFORE's beyond 2 paired s.e., ties to the gate nearest BEFORE's;
figures are then given on all faces and on the odd-numbered ones alone,
which did not choose it. Each model runs once per crop (outputs are
cached), so the grid costs little.

The rendered views may favour the large-pose model, which trained on such
renders, so each gate is also scored on the real turned faces: the plain
crops of faces whose annotated marks, fitted in their photo
(head_pose.py), turn REAL_TURN degrees or more. They are reported against
the main model alone, not used in the choice.

    python gate_study.py --model assets/split/landmarks_300w_int8.tflite \\
        --pose_model assets/split/landmarks_300w_pose_int8.tflite --out results/gate_study.json
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

import layouts
from metrics import FAILURE_THRESHOLD, nme_per_face
from pair_study import _paired, _run

YAWS = (10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 50.0, float("inf"))
SPREADS = (0.5, 0.65, 0.8, 1.0, float("inf"))
TURNED = "turned"
TURNED_RANGE = (25.0, 45.0)
REAL_TURN = 20.0
MAIN_FLIP = "main, flip test"
BEFORE_GATE = (20.0, 0.65)
BEFORE = "before: yaw 20, spread 0.65, every unsure face sent on"


def _cached(spread_fn):
    """spread_fn with its outputs kept per crop, so a grid reruns no model."""
    cache = {}

    def predict(images):
        images = np.asarray(images)
        keys = [hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in images]
        missing = [i for i, key in enumerate(keys) if key not in cache]
        if missing:
            marks, spread = spread_fn(images[missing])
            marks = np.asarray(marks).reshape(len(missing), -1)
            for j, i in enumerate(missing):
                cache[keys[i]] = (marks[j], np.asarray(spread)[j])
        return (np.stack([cache[key][0] for key in keys]),
                np.stack([cache[key][1] for key in keys]))
    return predict


def gate_name(gate):
    return f"yaw {gate[0]:g}, spread {gate[1]:g}"


def views_for_gates(record):
    """confidence.views_with_truth's views plus TURNED, where the 3D face
    model is present and the layout is its 68 points."""
    import dataset
    import hard_view
    from confidence import views_with_truth

    views, layout = views_with_truth(record)
    if layout.num_marks != 68:      # the 3D face model has the 68-point layout
        return views, layout
    faces = list(dataset._load(record, layout.num_marks).as_numpy_iterator())
    turned = hard_view.profile_views([f["image"] for f in faces], [f["marks"] for f in faces],
                                     seed=hard_view.SEED + 1, yaw_range=TURNED_RANGE)
    if turned is not None:
        views[TURNED] = turned
    return views, layout


def study(model, pose_model, record, yaws=YAWS, spreads=SPREADS):
    """{(view, row name): per-face NME}, the views' names and the gates."""
    from predict import load_landmark_functions

    views, layout = views_for_gates(record)
    _, spread_a, size = load_landmark_functions(model)
    _, spread_b, _ = load_landmark_functions(pose_model)
    spread_a, spread_b = _cached(spread_a), _cached(spread_b)
    mirrored = layouts.mirrored_model(spread_a, size)
    gates = [(y, s) for y in yaws for s in spreads]
    functions = {MAIN_FLIP: layouts.flip_averaged(spread_a, size),
                 BEFORE: layouts.ensembled(spread_a, mirrored, spread_b, size, gate=BEFORE_GATE,
                                           claim=False),
                 **{gate_name(g): layouts.ensembled(spread_a, mirrored, spread_b, size, gate=g)
                    for g in gates}}
    nmes = {}
    for view, (images, truth) in views.items():
        print(f"scoring {len(functions)} rows on {view} ({len(images)} crops)", flush=True)
        for name, fn in functions.items():
            nmes[view, name] = nme_per_face(_run(fn, images), truth, layout.eye_corners)
    return nmes, list(views), gates


def true_yaws(record):
    """|yaw| in degrees of each face of `record`, from its annotated marks
    in its source photo (NaN where the photo is gone or the fit fails)."""
    import dataset
    from head_pose import head_pose

    yaws = []
    for _, photo, _, marks in dataset.source_photos(record):
        pose = None if photo is None else head_pose(marks, photo.shape[1::-1])
        yaws.append(abs(pose["yaw"]) if pose else np.nan)
    return np.array(yaws)


def choose(nmes, views, gates, reference=BEFORE, rows=slice(None)):
    """The gate with the lowest mean NME over views other than profile, among
    those whose profile NME is within 2 paired s.e. of the `reference` row's
    (all gates where there is no profile view)."""
    import hard_view

    pooled = [v for v in views if v != hard_view.PROFILE]

    def allowed(gate):
        if hard_view.PROFILE not in views:
            return True
        diff = _paired(nmes[hard_view.PROFILE, gate_name(gate)][rows]
                       - nmes[hard_view.PROFILE, reference][rows])
        return diff["mean"] <= 2 * diff["se"]

    # Gates the crops cannot tell apart (the same faces sent on) tie; the tie
    # goes to the one nearest BEFORE_GATE, changing only what the crops decide.
    return min((g for g in gates if allowed(g)),
               key=lambda g: (round(float(np.mean([nmes[v, gate_name(g)][rows].mean()
                                                   for v in pooled])), 9),
                              abs(g[1] - BEFORE_GATE[1]), abs(g[0] - BEFORE_GATE[0])))


def main(argv=None):
    from predict import DEFAULT_LANDMARK_MODEL, DEFAULT_POSE_MODEL

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEFAULT_LANDMARK_MODEL))
    p.add_argument("--pose_model", default=str(DEFAULT_POSE_MODEL))
    p.add_argument("--record", default="tfrecords/test.record")
    p.add_argument("--out", default="results/gate_study.json")
    args = p.parse_args(argv)
    for name in ("model", "pose_model", "record"):
        if not Path(getattr(args, name)).exists():
            sys.exit(f"error: --{name} {getattr(args, name)}: no such file")
    try:
        nmes, views, gates = study(args.model, args.pose_model, args.record)
    except ValueError as err:   # a record or model that is not what it should be; it names the file
        sys.exit(f"error: {err}")
    current = (layouts.CASCADE_YAW, layouts.CASCADE_SPREAD)
    halves = {"all": slice(None), "even": slice(0, None, 2), "odd": slice(1, None, 2)}
    chosen = choose(nmes, views, gates, BEFORE, halves["even"])
    names = [MAIN_FLIP, BEFORE] + [gate_name(g) for g in gates]
    table = {half: {view: {name: {"nme": float(nmes[view, name][rows].mean()),
                                  "fr": float((nmes[view, name][rows] > FAILURE_THRESHOLD).mean()),
                                  "vs_before": _paired(nmes[view, name][rows]
                                                       - nmes[view, BEFORE][rows])}
                           for name in names} for view in views} for half, rows in halves.items()}
    yaws = true_yaws(args.record)
    real = np.isfinite(yaws) & (yaws >= REAL_TURN)
    real_turned = {"min_yaw": REAL_TURN, "faces": int(real.sum()),
                   "scores": {name: {"nme": float(nmes["plain", name][real].mean()),
                                     "vs_main": _paired(nmes["plain", name][real]
                                                        - nmes["plain", MAIN_FLIP][real])}
                              for name in names}} if real.any() else None
    result = {"model": args.model, "pose_model": args.pose_model, "record": args.record,
              "views": views, "turned_range": list(TURNED_RANGE),
              "gates": [list(g) for g in gates], "before": list(BEFORE_GATE), "current": list(current),
              "chosen_on_even": list(chosen), "scores": table, "real_turned": real_turned,
              "true_yaws": [None if not np.isfinite(y) else float(y) for y in yaws]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    for half in ("all", "odd"):
        print(f"{half} faces, NME % (the chosen gate against the one before, paired s.e.):")
        for view in views:
            cell = table[half][view][gate_name(chosen)]
            print(f"{view:>10}: before {100 * table[half][view][BEFORE]['nme']:.3f}; "
                  f"chosen {100 * cell['nme']:.3f} ({100 * cell['vs_before']['mean']:+.3f}, "
                  f"s.e. {100 * cell['vs_before']['se']:.3f}); "
                  f"main flip {100 * table[half][view][MAIN_FLIP]['nme']:.3f}")
    if real_turned and gate_name(current) in real_turned["scores"]:
        cell = real_turned["scores"][gate_name(current)]
        print(f"{real_turned['faces']} real faces turned {REAL_TURN:g} degrees or more: the code's "
              f"gate {100 * cell['nme']:.3f}, main flip "
              f"{100 * real_turned['scores'][MAIN_FLIP]['nme']:.3f} ({100 * cell['vs_main']['mean']:+.3f}, "
              f"s.e. {100 * cell['vs_main']['se']:.3f})")
    print(f"gate chosen on the even faces: {gate_name(chosen)} (the code's: {gate_name(current)}); "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
