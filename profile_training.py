"""Where one training step of a recipe goes: the parts timed apart.

Times, in one process and taking turns: the input pipeline alone (batches
of augmented crops), a training step on a batch already in memory with and
without the heatmap regulariser, the weight average's update, and one
validation pass, and writes them per step (validation spread over the
epoch's steps) to JSON.

    python profile_training.py --out results/training_profile.json -- $(TRAIN_FLAGS)
"""
import argparse
import json
import time
from pathlib import Path

import keras_env  # noqa: F401  (must precede TensorFlow)
import numpy as np
import tensorflow as tf

import dataset
import landmark
from callbacks import WeightAverage
from layouts import get_layout
from losses import HeatmapRegularised, make_loss, nme_metric
from tflite_model import cpu_info


def _median_ms(fn, repeats):
    fn()                                           # trace / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train_record", default="tfrecords/train.record")
    parser.add_argument("--val_record", default="tfrecords/test.record")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="results/training_profile.json")
    parser.add_argument("recipe", nargs=argparse.REMAINDER, help="landmark.py flags, after --")
    args = parser.parse_args(argv)
    flags = landmark.parse_args([a for a in args.recipe if a != "--"])
    precision = landmark.set_precision(flags.precision)
    layout_name, count = dataset.record_info(args.train_record)
    layout = get_layout(layout_name)
    steps = count // args.batch_size
    card = {"model": flags.model, "options": landmark.model_options(flags)}
    augmentation = landmark.augmentation_settings(flags, {})
    jitter = augmentation["scale_jitter"]
    pipeline = iter(dataset.train_dataset(
        args.train_record, args.batch_size, layout_name,
        rotation_deg=augmentation["rotation_deg"], shift_fraction=augmentation["shift_fraction"],
        scale_range=(1 - jitter, 1 + jitter), occlusion=augmentation["occlusion"],
        wild=augmentation["wild"]).repeat())
    images, targets = next(pipeline)

    def build(heatmap):
        model = landmark.build_model(flags.model, layout.num_marks, **card["options"])
        loss, metric = make_loss(flags.loss or "wing", layout), nme_metric(layout)
        optimizer = landmark.make_optimizer(1e-3, flags.weight_decay)
        if heatmap and flags.heatmap_loss:
            trained = HeatmapRegularised(model, flags.heatmap_loss, flags.heatmap_sigma, loss,
                                         metric)
            trained.compile(optimizer=optimizer)
        else:
            trained = model
            trained.compile(optimizer=optimizer, loss=loss, metrics=[metric])
        return trained

    timings = {}
    full, plain = build(True), build(False)
    step_full = tf.function(full.train_step)
    step_plain = tf.function(plain.train_step)
    average = WeightAverage(flags.weight_average or 0.999)
    average.set_model(full)
    average.on_train_begin()
    validation = dataset.eval_dataset(args.val_record, 64, layout_name)
    def ten_batches():
        for _ in range(10):
            next(pipeline)

    parts = {
        # Ten at a time, so the prefetch buffer runs dry and the figure is
        # the pipeline's own rate (a tenth of this is one batch).
        "input pipeline, 10 batches": ten_batches,
        "train step, marks loss only": lambda: step_plain((images, targets)),
        "train step, with heatmap regulariser": lambda: step_full((images, targets)),
        "weight average update": average._update,
    }
    for _ in range(2):                              # two rounds, taking turns
        for name, fn in parts.items():
            timings.setdefault(name, []).append(_median_ms(fn, args.repeats))
    timings["validation pass / steps per epoch"] = [
        _median_ms(lambda: full.evaluate(validation, verbose=0), 3) / steps]
    report = {"cpu": cpu_info(), "precision": precision, "batch_size": args.batch_size,
              "steps_per_epoch": steps, "recipe": args.recipe,
              "ms_per_step": {k.replace("10 batches", "one batch"): float(np.median(v)) / (
                  10 if "10 batches" in k else 1) for k, v in timings.items()},
              "rounds": timings}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    for name, ms in report["ms_per_step"].items():
        print(f"{name:45s} {ms:8.1f} ms")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
