"""The main landmark model, a large-pose one, and the two paired
(layouts.paired), scored on the validation crops, plain and in every
hard-view kind (the turned `profile` kind where the 3D model is present).

The pair's one setting, layouts.PICK_MARGIN, is chosen on the even-numbered
faces from MARGINS (the best profile-kind NME whose plain NME is no worse
than the main model's beyond 2 paired s.e.); every figure is then given on
all faces and on the odd-numbered ones alone, which did not choose it.
Differences are paired, per face, against the main model as the predictor
ran it before the pair: with the flip test ("vs_main"), and against the
models as the predictor runs them ("predictor", "vs_pair": layouts.ensembled
with the main model's look at the mirrored crop as the second opinion; a
face the main model shows turned goes the pair's way, margin PICK_MARGIN,
and faces turned beyond layouts.TURNED_YAW take the large-pose model's flip
test instead of the fusion; pair rows either side of that threshold). `--candidates` adds other landmark
models, each scored alone (with and without the flip test) and paired
with the large-pose model and with the main one (as a pair, and the
predictor's way), to see whether one can replace either;
`--against MAIN POSE [SECOND]` adds an earlier pair (the bundle before;
with a second main model, an earlier ensemble), paired against on every
row as "vs_before". `--second_main` adds a second main
model: the two fused on every face, and the ensemble with it in the
mirrored look's place (the predictor's default until 2026-12-07).

    python pair_study.py --model assets/landmarks_300w_int8.tflite \\
        --pose_model assets/landmarks_300w_pose_int8.tflite --out results/pair_study.json
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

import layouts
from geometry import MODEL_SIZE
from metrics import FAILURE_THRESHOLD, nme_per_face

BEFORE = "pair before"
# The predictor's way with the bundled models (predict.combine_spread_functions,
# layouts.FLIP_SECOND).
PREDICTOR = "predictor"
TWO_MAINS = "two mains, fused"
# The ensemble with a second main model (layouts.ensembled), the predictor's
# default until 2026-12-07; the predictor now puts the main model's look at
# the mirrored crop in the second model's place.
SECOND_ENSEMBLE = "ensemble with the second main model"
# The pair as the predictor ran it before the ensemble (layouts.paired_flip).
PAIR_WAY = f"pair, large-pose flip test beyond {layouts.TURNED_YAW:g}°"
MARGINS = (0.0, 0.1, 0.2, 0.3, 0.5, None)     # None: fuse every face, never take b whole


def _run(spread_fn, images):
    marks, _ = zip(*(spread_fn(images[i:i + 32]) for i in range(0, len(images), 32)))
    return np.concatenate(marks).reshape(len(images), -1, 2) * MODEL_SIZE


def _paired(diff):
    return {"mean": float(diff.mean()), "se": float(diff.std(ddof=1) / np.sqrt(len(diff)))}


def study(model, pose_model, record, candidates=(), against=None, second_main=None):
    from confidence import views_with_truth
    from predict import load_landmark_functions

    views, layout = views_with_truth(record)
    _, spread_a, size = load_landmark_functions(model)
    _, spread_b, _ = load_landmark_functions(pose_model)
    functions = {"main, flip test": layouts.flip_averaged(spread_a, size),
                 "large-pose, flip test": layouts.flip_averaged(spread_b, size),
                 **{f"pair, margin {m}": layouts.paired(spread_a, spread_b, m) for m in MARGINS},
                 "cascade": layouts.cascaded(spread_a, spread_b, size),
                 # The turned faces' threshold, TURNED_YAW and either side of it.
                 **{f"pair, large-pose flip test beyond {y:g}°": layouts.paired_flip(
                     spread_a, spread_b, size, yaw=y) for y in (20.0, layouts.TURNED_YAW, 40.0)},
                 "pair, large-pose flip test where taken": layouts.paired_flip(
                     spread_a, spread_b, size, yaw=None)}
    for path in candidates:
        _, spread_c, _ = load_landmark_functions(path)
        name = Path(path).name
        functions.update({name: spread_c, f"{name}, flip test": layouts.flip_averaged(spread_c, size),
                          f"{name} + large-pose, pair": layouts.paired(spread_c, spread_b),
                          f"{name} + large-pose, {PREDICTOR}": layouts.paired_flip(spread_c, spread_b, size),
                          f"main + {name}, pair": layouts.paired(spread_a, spread_c),
                          f"main + {name}, cascade": layouts.cascaded(spread_a, spread_c, size),
                          f"main + {name}, {PREDICTOR}": layouts.paired_flip(spread_a, spread_c, size)})
    if second_main:
        _, spread_c, _ = load_landmark_functions(second_main)
        functions.update({
            TWO_MAINS: layouts.paired(spread_a, spread_c, None),
            # The large-pose model on every face: three invokes a face, four a turned one.
            f"{TWO_MAINS} + large-pose, {PREDICTOR}": layouts.paired_flip(
                layouts.paired(spread_a, spread_c, None), spread_b, size),
            SECOND_ENSEMBLE: layouts.ensembled(spread_a, spread_c, spread_b, size)})
    # What predictor() runs with the bundled models (layouts.FLIP_SECOND).
    functions[PREDICTOR] = layouts.ensembled(spread_a, None, spread_b, size)
    if against:
        _, before_a, _ = load_landmark_functions(against[0])
        _, before_b, _ = load_landmark_functions(against[1])
        if len(against) > 2:
            # FLIP_SECOND: the earlier main model's own mirrored look, as predictor() runs it.
            before_c = (None if against[2] == layouts.FLIP_SECOND
                        else load_landmark_functions(against[2])[1])
            functions[BEFORE] = layouts.ensembled(before_a, before_c, before_b, size)
        else:
            functions[BEFORE] = layouts.paired(before_a, before_b)
    nmes = {(view, name): nme_per_face(_run(fn, images), truth, layout.eye_corners)
            for view, (images, truth) in views.items() for name, fn in functions.items()}
    return nmes, list(views)


def main(argv=None):
    from predict import DEFAULT_LANDMARK_MODEL, DEFAULT_POSE_MODEL, DEFAULT_SECOND_MODEL

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEFAULT_LANDMARK_MODEL))
    p.add_argument("--pose_model", default=str(DEFAULT_POSE_MODEL))
    p.add_argument("--record", default="tfrecords/test.record")
    p.add_argument("--candidates", nargs="+", default=[], metavar="TFLITE",
                   help="other landmark models to score alone and paired with --pose_model")
    p.add_argument("--against", nargs="+", default=None, metavar="TFLITE",
                   help="an earlier pair to compare with, MAIN POSE (e.g. the bundle before), "
                        "or an ensemble, MAIN POSE SECOND (SECOND 'flip': MAIN's mirrored look)")
    p.add_argument("--second_main", default=None, metavar="TFLITE",
                   help="a second main model, fused with --model (layouts.ensembled; default: "
                        "the bundled one with the bundled --model; 'none': the pair)")
    p.add_argument("--out", default="results/pair_study.json")
    args = p.parse_args(argv)
    if args.against and len(args.against) not in (2, 3):
        p.error("--against takes MAIN POSE, or MAIN POSE SECOND")
    if args.second_main is None and Path(args.model).resolve() == DEFAULT_LANDMARK_MODEL:
        args.second_main = str(DEFAULT_SECOND_MODEL) if DEFAULT_SECOND_MODEL.is_file() else None
    if args.second_main == "none":
        args.second_main = None
    for name in ("model", "pose_model", "record"):
        if not Path(getattr(args, name)).exists():
            sys.exit(f"error: --{name} {getattr(args, name)}: no such file")
    against_files = [p for p in args.against or [] if p != layouts.FLIP_SECOND]
    for flag, paths in (("candidates", args.candidates), ("against", against_files),
                        ("second_main", [args.second_main] if args.second_main else [])):
        for path in paths:
            if not Path(path).is_file():
                sys.exit(f"error: --{flag} {path}: no such file")
    try:
        nmes, views = study(args.model, args.pose_model, args.record, args.candidates,
                            args.against, args.second_main)
    except ValueError as err:   # a record or model that is not what it should be; it names the file
        sys.exit(f"error: {err}")
    base, default = "main, flip test", PREDICTOR
    names = sorted({name for _, name in nmes}, key=lambda n: (n != base, n))
    halves = {"all": slice(None), "even": slice(0, None, 2), "odd": slice(1, None, 2)}
    table = {half: {view: {name: {"nme": float(nmes[view, name][rows].mean()),
                                  "fr": float((nmes[view, name][rows] > FAILURE_THRESHOLD).mean()),
                                  "vs_main": _paired(nmes[view, name][rows] - nmes[view, base][rows]),
                                  "vs_pair": _paired(nmes[view, name][rows] - nmes[view, default][rows]),
                                  **({"vs_before": _paired(nmes[view, name][rows]
                                                           - nmes[view, BEFORE][rows])}
                                     if args.against else {})}
                           for name in names} for view in views} for half, rows in halves.items()}
    even = table["even"]
    allowed = [m for m in MARGINS if even["plain"][f"pair, margin {m}"]["vs_main"]["mean"]
               <= 2 * even["plain"][f"pair, margin {m}"]["vs_main"]["se"]]
    chosen = min(allowed or MARGINS,
                 key=lambda m: even.get("profile", even["plain"])[f"pair, margin {m}"]["nme"])
    result = {"model": args.model, "pose_model": args.pose_model, "record": args.record,
              "candidates": args.candidates, "against": args.against,
              "second_main": args.second_main,
              "views": views, "margins": list(MARGINS), "chosen_margin": chosen,
              "margin_in_code": layouts.PICK_MARGIN, "scores": table}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    for view in views:
        cells = [f"{name} {100 * table['all'][view][name]['nme']:.2f}" for name in
                 (base, "large-pose, flip test", f"pair, margin {chosen}", PREDICTOR)]
        print(f"{view:>10}: " + "; ".join(cells))
        if args.against:
            diff = table["all"][view][default]["vs_before"]
            print(f"{'':>12}pair - pair before: {100 * diff['mean']:+.3f} (s.e. {100 * diff['se']:.3f})")
        for name in names:
            if any(Path(c).name in name for c in args.candidates) or name.startswith(TWO_MAINS):
                cell, diff = table["all"][view][name], table["all"][view][name]["vs_pair"]
                print(f"{'':>12}{name} {100 * cell['nme']:.2f} (vs pair {100 * diff['mean']:+.3f}, "
                      f"s.e. {100 * diff['se']:.3f}; FR {100 * cell['fr']:.0f}%)")
    print(f"margin chosen on the even faces: {chosen} (layouts.PICK_MARGIN is {layouts.PICK_MARGIN}); "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
