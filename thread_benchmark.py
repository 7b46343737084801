"""One predictor shared by threads against one predictor per thread.

Each of `--threads` threads marks the test photos `--calls` times; the run
is timed for a shared predictor and for a predictor per thread, taking
turns, and the memory each extra predictor holds is read from the
process's resident size. Writes calls/s, the answers' agreement with one
thread, and MB per predictor.

    python thread_benchmark.py --out results/predictor_threads.json
"""
import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from predict import image_paths, predictor
from tflite_model import cpu_info


def resident_mb():
    """This process's resident memory, MB (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 1e6


def run(models, images, calls):
    """Wall seconds for len(models) threads, thread k using models[k], each
    marking `images` in turn `calls` times; and every answer."""
    def work(k):
        return [models[k].predict(images[i % len(images)]) for i in range(calls)]
    start = time.perf_counter()
    with ThreadPoolExecutor(len(models)) as pool:
        answers = list(pool.map(work, range(len(models))))
    return time.perf_counter() - start, answers


def same(faces, reference):
    return len(faces) == len(reference) and all(
        np.array_equal(a["marks"], b["marks"]) for a, b in zip(faces, reference))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", default="test_images")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--calls", type=int, default=25, help="calls per thread and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="results/predictor_threads.json")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.calls < 1 or args.rounds < 1:
        parser.error("--threads, --calls and --rounds must be >= 1")
    images = [cv2.imread(str(p)) for p in image_paths([args.images])]
    before = resident_mb()
    shared = predictor()
    one = resident_mb() - before
    own = [predictor() for _ in range(args.threads)]
    per_predictor = (resident_mb() - before - one) / args.threads
    reference = [shared.predict(image) for image in images]
    seconds = {"shared": [], "per_thread": []}
    agree = True
    for _ in range(args.rounds):
        for name, models in (("shared", [shared] * args.threads), ("per_thread", own)):
            took, answers = run(models, images, args.calls)
            seconds[name].append(took)
            agree &= all(same(faces, reference[i % len(images)])
                         for thread in answers for i, faces in enumerate(thread))
    calls = args.threads * args.calls
    report = {"cpu": cpu_info(), "cpu_count": len(os.sched_getaffinity(0)),
              "threads": args.threads, "calls_per_round": calls, "rounds": args.rounds,
              "images": [str(p) for p in image_paths([args.images])],
              "calls_per_s": {k: calls / float(np.median(v)) for k, v in seconds.items()},
              "seconds": seconds, "answers_as_one_thread": bool(agree),
              "mb_first_predictor": one, "mb_per_extra_predictor": per_predictor}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    rate = report["calls_per_s"]
    print(f"{args.threads} threads: shared {rate['shared']:.1f} calls/s, per thread "
          f"{rate['per_thread']:.1f} calls/s; {per_predictor:.1f} MB per extra predictor; "
          f"answers as one thread: {agree} -> {args.out}")


if __name__ == "__main__":
    main()
