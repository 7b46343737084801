"""Training throughput of a recipe in float32 against mixed_bfloat16.

Runs landmark.py for a few epochs in each precision, taking turns (A B A B)
so the machine's drift falls on both, and writes images/s per epoch (the
first epoch of each run, which traces the graph, is left out) with the CPU.

    python train_throughput.py --train_record tfrecords/train.record \\
        --val_record tfrecords/test.record --out results/train_throughput.json -- \\
        --model resnet --head integral ...
"""
import argparse
import csv
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags():
    text = Path("/proc/cpuinfo").read_text().split()
    return sorted({f for f in ("avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile") if f in text})


def one_run(precision, args, recipe, folder):
    command = [sys.executable, "landmark.py", "--precision", precision,
               "--epochs", str(args.epochs), "--batch_size", str(args.batch_size),
               "--train_record", args.train_record, "--val_record", args.val_record,
               "--checkpoint_dir", str(folder), *recipe]
    print("running:", " ".join(command), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    with (folder / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return [float(r["images_per_s"]) for r in rows[1:]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train_record", default="tfrecords/train.record")
    parser.add_argument("--val_record", default="tfrecords/test.record")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="results/train_throughput.json")
    parser.add_argument("recipe", nargs=argparse.REMAINDER,
                        help="landmark.py flags of the recipe, after --")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is left out)")
    recipe = [a for a in args.recipe if a != "--"]
    speeds = {"float32": [], "mixed_bfloat16": []}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            for precision in speeds:
                folder = Path(scratch) / f"{precision}_{round_}"
                speeds[precision] += one_run(precision, args, recipe, folder)
    medians = {k: float(np.median(v)) for k, v in speeds.items()}
    report = {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "recipe": recipe,
              "batch_size": args.batch_size, "epochs_per_run": args.epochs,
              "rounds": args.rounds, "timing": "runs take turns; first epoch of each left out",
              "images_per_s": speeds, "median_images_per_s": medians,
              "bf16_speedup": medians["mixed_bfloat16"] / medians["float32"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"{report['cpu']}: float32 {medians['float32']:.0f} images/s, mixed_bfloat16 "
          f"{medians['mixed_bfloat16']:.0f} ({report['bf16_speedup']:.2f}x) -> {args.out}")


if __name__ == "__main__":
    main()
