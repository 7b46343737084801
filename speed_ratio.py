"""Per-frame speed of two predictor set-ups as a ratio, measured in one run.

Each photo is fitted into a 640x480 frame and run through `predictor.predict`
(detector + landmarks) at one thread; the two set-ups take turns in short
rounds, so that this machine's drifts in speed fall on both alike and the
ratio holds even where the milliseconds do not.

    python speed_ratio.py test_images/ --before OLD_MAIN.tflite OLD_POSE.tflite \\
        --out results/speed_ratio.json     # --after: the bundled pair
"""
import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm


def timed_turns(models, frames, rounds=10, runs=20):
    """{name: {photo: [ms, ...]}}: each round runs every model `runs` times on
    every frame, the models' order turning round by round."""
    names = list(models)
    times = {name: {photo: [] for photo in frames} for name in names}
    with tqdm(total=rounds * len(names) * len(frames) * runs, desc="timing", unit="frame") as bar:
        for round_ in range(rounds):
            for k in range(len(names)):
                name = names[(round_ + k) % len(names)]
                for photo, frame in frames.items():
                    models[name].predict(frame)            # warm this photo's path
                    for _ in range(runs):
                        start = time.perf_counter()
                        models[name].predict(frame)
                        times[name][photo].append(1000 * (time.perf_counter() - start))
                    bar.update(runs)
    return times


def main(argv=None):
    from predict import FLIP_SECOND, ROOT, fitted_frame, image_paths, predictor
    from tflite_model import cpu_info

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="+", help="photos or folders of photos")
    p.add_argument("--before", nargs="+", required=True, metavar="TFLITE",
                   help="landmark model, optionally the large-pose model paired with it, and "
                        "optionally a second main model or 'flip' (the ensemble); 'default': "
                        "the bundled models, as predictor() runs them")
    p.add_argument("--after", nargs="+", default=None, metavar="TFLITE",
                   help="the same (default: the bundled models, as predictor() runs them)")
    p.add_argument("--threads", nargs=2, type=int, default=(1, 1), metavar=("BEFORE", "AFTER"),
                   help="each set-up's interpreter threads (predictor(threads=); default 1 1)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--runs", type=int, default=20, help="timed frames per photo and round")
    p.add_argument("--out", default="results/speed_ratio.json")
    args = p.parse_args(argv)
    if args.before == ["default"]:
        args.before = None
    for paths in (args.before or [], args.after or []):
        if len(paths) > 3:
            p.error("give a landmark model, at most one large-pose model and one second "
                    "main model")
        for k, path in enumerate(paths):
            if not (k == 2 and path == FLIP_SECOND) and not Path(path).is_file():
                p.error(f"{path}: no such file")
    if min(args.threads) < 1:
        p.error(f"--threads must be >= 1, got {args.threads[0]} {args.threads[1]}")
    cv2.setNumThreads(1)

    def build(paths, threads):
        if paths is None:
            return predictor(threads=threads)
        return predictor(None, paths[0], pose_model_path=paths[1] if len(paths) > 1 else False,
                         second_model_path=paths[2] if len(paths) > 2 else False, threads=threads)
    try:
        models = {"before": build(args.before, args.threads[0]),
                  "after": build(args.after, args.threads[1])}
        frames = {str(path): fitted_frame(path) for path in image_paths(args.inputs)}
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    times = timed_turns(models, frames, args.rounds, args.runs)
    def shown(path):
        if str(path) == FLIP_SECOND:
            return FLIP_SECOND
        path = Path(path).resolve()
        return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    setups = {name: {"landmark_model": shown(model.landmark_model),
                     "pose_model": None if model.pose_model is None else shown(model.pose_model),
                     "second_model": None if model.second_model is None
                     else shown(model.second_model),
                     "flip": model.flip, "threads": model.threads}
              for name, model in models.items()}
    photos = {photo: {name: float(np.median(times[name][photo])) for name in models}
              for photo in frames}
    for photo, ms in photos.items():
        ms["ratio"] = ms["after"] / ms["before"]
    result = {"cpu": cpu_info(), "threads": list(args.threads), "frame": [640, 480],
              "rounds": args.rounds,
              "runs": args.runs, "timing": "the set-ups take turns each round; median ms",
              "setups": setups, "photos": photos,
              "ratio": float(np.mean([ms["ratio"] for ms in photos.values()]))}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    for photo, ms in photos.items():
        print(f"{Path(photo).name}: before {ms['before']:.2f} ms, after {ms['after']:.2f} ms "
              f"({ms['ratio']:.2f}x)")
    print(f"after / before, mean over photos: {result['ratio']:.2f}x -> {args.out}")


if __name__ == "__main__":
    main()
