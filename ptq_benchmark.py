"""TFLite post-training quantization modes: accuracy, latency, size, dtypes.

For the float and the QAT SavedModels, converts with each mode, checks that
the mode really applied (the dtypes of every conv / dense op), scores the
result on the test records (NME, FR and AUC at 0.10, MSE in 128-px crops)
and times it with the LiteRT interpreter. A QuantizationDebugger pass on the
float model's integer conversion ranks layers by quantization error and adds
an `int8_selective` row with the worst layers left in float.

    python ptq_benchmark.py        # exported/, exported_quantized/ -> results/
"""
import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

import keras_env  # noqa: F401  (must precede TensorFlow)
import numpy as np
import tensorflow as tf
from tqdm import tqdm

import dataset
import landmark
import metrics
from layouts import get_layout
from predict import face_crops, image_paths, unwritable
from tflite_model import TFLiteModel, cpu_info, latency_ms, weighted_op_dtypes

MODES = ("float32", "dynamic_range", "int8_float_fallback", "int8_only", "float16", "16x8")
# What each mode promises for the activations and weights of conv / dense ops.
PROMISES = {
    "float32": ({"float32"}, {"float32"}),
    "dynamic_range": ({"float32", "int8"}, {"int8"}),
    "int8_float_fallback": ({"int8"}, {"int8"}),
    "int8_only": ({"int8"}, {"int8"}),
    "float16": ({"float32"}, {"float16"}),
    "16x8": ({"int16"}, {"int8"}),
}
SELECTIVE_LAYERS = 3
# Dynamic-range quantization leaves weights smaller than this in float (the
# converter's documented threshold), so those ops keep their float weights.
DYNAMIC_RANGE_MIN_WEIGHTS = 1024


class ConversionError(Exception):
    """The converter cannot do this model/mode; the message says why."""


def converter_for(saved_model_dir, mode, representative, per_channel=True):
    """A TFLiteConverter set up for `mode`; representative: (K, H, W, 3).
    `per_channel=False` gives conv weights one scale per tensor."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if mode == "float32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    # No public switch; this private one is the converter's own per-tensor path.
    converter._experimental_disable_per_channel = not per_channel
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode in ("int8_float_fallback", "int8_only", "16x8", "int8_selective"):
        converter.representative_dataset = lambda: ([image[None]] for image in representative)
    if mode == "int8_only":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    if mode == "16x8":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return converter


def convert(saved_model_dir, mode, representative, per_channel=True):
    """TFLite flatbuffer of the SavedModel in `mode`, or ConversionError."""
    try:
        return converter_for(saved_model_dir, mode, representative, per_channel).convert()
    except Exception as err:  # the converter raises many types; all mean "cannot"
        reason = str(err).strip().splitlines()
        reason = next((line for line in reason if "error" in line.lower()), reason[-1] if reason else repr(err))
        raise ConversionError(reason.strip()[:300]) from None


def check_dtypes(content, mode):
    """(ok, note): do the conv / dense ops and the model's input/output have
    the dtypes `mode` promises? A mode the converter silently skipped fails."""
    ops = weighted_op_dtypes(content)
    model = TFLiteModel(content)
    io_types = {np.dtype(model.input["dtype"]).name, np.dtype(model.output["dtype"]).name}
    problems = []
    if mode == "dynamic_range":
        ops = [op for op in ops if op[3] >= DYNAMIC_RANGE_MIN_WEIGHTS]
    if mode == "int8_selective":
        kinds = {(a, w) for _, a, w, _ in ops}
        if not kinds <= {("int8", "int8"), ("float32", "float32")} or ("float32", "float32") not in kinds:
            problems.append(f"expected int8 ops and some float ones, found {sorted(kinds)}")
    else:
        activations, weights = PROMISES[mode]
        wrong = [f"{name} {a}/{w}" for name, a, w, _ in ops
                 if a not in activations or w not in weights]
        if wrong:
            problems.append(f"{len(wrong)}/{len(ops)} conv/dense ops not as promised "
                            f"(e.g. {wrong[0]}; expected {'|'.join(sorted(activations))}/"
                            f"{'|'.join(sorted(weights))})")
    expected_io = {"int8"} if mode == "int8_only" else {"float32"}
    if io_types != expected_io:
        problems.append(f"model input/output {sorted(io_types)}, expected {sorted(expected_io)}")
    return not problems, "; ".join(problems)


def representative_images(record, count, seed=0):
    """`count` model crops (deterministic centre crops) drawn from a record."""
    images = np.concatenate([batch[0].numpy() for batch in dataset.eval_dataset(record, 256)])
    pick = np.random.default_rng(seed).choice(len(images), min(count, len(images)), replace=False)
    return images[np.sort(pick)]


LATENCY_KEYS = ("latency_ms_1thread_median", "latency_ms_1thread_p90",
                "latency_ms_allthreads_median")


def measure(content, score):
    """Accuracy (via `score`) and size; time_rows adds the latencies."""
    row = score(TFLiteModel(content, num_threads=os.cpu_count()))
    row["size_kb"] = len(content) / 1024
    return row


def time_rows(timed, sample_image, runs):
    """Fill in LATENCY_KEYS of each (row, content) in `timed`, at 1 thread
    and at all cores. All of them are timed together, taking turns, so the
    ratios between rows are measured under the same conditions."""
    if not timed:
        return
    tqdm.write(f"timing {len(timed)} models in turn, {runs} invokes each, 1 thread "
               f"then {os.cpu_count()}")
    for threads, median_key, p90_key in ((1, *LATENCY_KEYS[:2]),
                                         (os.cpu_count(), LATENCY_KEYS[2], None)):
        models = [TFLiteModel(content, num_threads=threads) for _, content in timed]
        for (row, _), (median, p90) in zip(timed, latency_ms(models, sample_image, runs)):
            row[median_key] = median
            if p90_key:
                row[p90_key] = p90


def layer_errors(saved_model_dir, representative, worst=SELECTIVE_LAYERS):
    """Per-layer error of the integer conversion (QuantizationDebugger) and
    the selective model with the `worst` layers (by RMSE / scale) in float.

    RMSE / scale is the layer's error in units of its own int8 step: about
    0.29 (a uniform rounding error) is the floor; more means the layer
    loses more than rounding explains.
    """
    def debug_data():
        return ([image[None]] for image in representative)

    converter = converter_for(saved_model_dir, "int8_selective", representative)
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter,
                                                         debug_dataset=debug_data)
    debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    layers = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(row["scale"])
        layers.append({"op": row["op_name"], "tensor": row["tensor_name"],
                       "rmse_over_scale": float(np.sqrt(float(row["mean_squared_error"])) / scale)
                       if scale else 0.0,
                       "mean_error": float(row["mean_error"]),
                       "max_abs_error": float(row["max_abs_error"])})
    ranked = sorted(layers, key=lambda l: -l["rmse_over_scale"])
    denied = [l["tensor"] for l in ranked[:worst]]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denied)
    selective = tf.lite.experimental.QuantizationDebugger(
        converter=converter_for(saved_model_dir, "int8_selective", representative),
        debug_dataset=debug_data, debug_options=options)
    return layers, denied, selective.get_nondebug_quantized_model()


# ----------------------------------------------------------------- output --

def _percent(v):
    return "" if v is None else f"{100 * v:.3f}"


def markdown(report):
    """The benchmark tables, as markdown."""
    def cell(value, fmt):
        return "" if value is None else fmt.format(value)

    cpu = report.get("cpu")  # reports before the CPU was recorded have none
    on = (f" ({cpu['model']}, {'with' if cpu['int8_dot_product'] else 'without'} int8 "
          "dot-product instructions)" if cpu else "")
    # Reports before the models took turns (time_rows) were timed one by one.
    turns = ", the models taking turns" if report.get("timing") == "in turn" else ""
    lines = [f"Test faces: {report['num_faces']} from `{report['test_record']}` "
             f"({report['scoring']}). Latency: median / p90 of {report['runs']} single-face "
             f"invokes after 20 warm-ups{turns}, LiteRT interpreter, "
             f"{report['cpu_count']} cores{on}.", ""]
    for model in ("float", "qat"):
        rows = [r for r in report["rows"] if r["model"] == model]
        if not rows:
            continue
        lines += [f"**{'Float model' if model == 'float' else 'QAT model'}** "
                  f"(`{report['models'][model]}`)", "",
                  "| mode | NME % | FR@0.10 % | AUC@0.10 | MSE (128 px) | 1-thread ms (median / p90) "
                  "| all-thread ms | size KB | dtypes as promised | note |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            ok = "" if r["dtype_check_ok"] is None else ("yes" if r["dtype_check_ok"] else "**NO**")
            lines.append(
                f"| {r['mode']} | {_percent(r['nme'])} | {cell(r['fr'] and 100 * r['fr'], '{:.2f}') if r['fr'] is not None else ''} "
                f"| {cell(r['auc'], '{:.4f}')} | {cell(r['mse'], '{:.3f}')} "
                f"| {cell(r['latency_ms_1thread_median'], '{:.3f}')} / {cell(r['latency_ms_1thread_p90'], '{:.3f}')} "
                f"| {cell(r['latency_ms_allthreads_median'], '{:.3f}')} | {cell(r['size_kb'], '{:.0f}')} "
                f"| {ok} | {r['note']} |")
        lines.append("")
    if report.get("summary"):
        lines += ["**What this run shows**", ""] + [f"- {s}" for s in report["summary"]] + [""]
    if report.get("layers"):
        lines += [f"**Per-layer error of the float model's integer conversion** "
                  f"(QuantizationDebugger, RMSE in units of the layer's int8 step; "
                  f"the {len(report['denylisted'])} worst stay float in `int8_selective`)", "",
                  "| layer output | op | RMSE / scale | max abs error |", "| --- | --- | --- | --- |"]
        for layer in sorted(report["layers"], key=lambda l: -l["rmse_over_scale"]):
            mark = " (float in int8_selective)" if layer["tensor"] in report["denylisted"] else ""
            lines.append(f"| `{layer['tensor']}`{mark} | {layer['op']} | "
                         f"{layer['rmse_over_scale']:.3f} | {layer['max_abs_error']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def summary_lines(rows):
    """Plain statements comparing the rows the mission cares about."""
    find = {(r["model"], r["mode"]): r for r in rows if r.get("nme") is not None}
    lines = []
    base = find.get(("float", "float32"))
    if base is None:
        return lines
    for key, label in ((("qat", "int8_only"), "QAT model, int8_only"),
                       (("float", "int8_only"), "float model, int8_only (PTQ alone)"),
                       (("float", "int8_selective"), "float model, int8_selective")):
        row = find.get(key)
        if row is None:
            continue
        lines.append(f"{label}: NME {100 * row['nme']:.3f}% vs float32 {100 * base['nme']:.3f}% "
                     f"({100 * (row['nme'] - base['nme']):+.3f} points); 1-thread latency "
                     f"{row['latency_ms_1thread_median'] / base['latency_ms_1thread_median']:.2f}x "
                     f"the float model's float32")
    return lines


def plot_ced(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, model in zip(axes, ("float", "qat")):
        for row in report["rows"]:
            if row["model"] == model and row.get("nmes"):
                xs, ys = metrics.ced(row["nmes"])
                ax.plot(100 * xs, ys, label=f"{row['mode']} ({100 * row['nme']:.3f}%)")
        ax.set(title=f"{model} model", xlabel="NME (%)", xlim=(0, 10), ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("share of faces with NME below")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------- main --

def label_scorer(test_record):
    """score(TFLiteModel) -> metrics on labelled test records."""
    def score(model):
        result = landmark.evaluate(model.predict, test_record, desc="scoring")
        return {k: result[k] for k in ("nme", "fr", "auc", "mse", "nmes", "groups")}
    return score


def agreement_scorer(reference, crops, layout_name):
    """score(TFLiteModel) -> NME, FR, AUC and MSE of its marks against a
    reference model's marks on unlabelled crops (label-free mode)."""
    eye_corners = get_layout(layout_name).eye_corners
    expected = reference.predict(crops)

    def score(model):
        got = model.predict(crops)
        nmes = metrics.nme_per_face(got.reshape(len(crops), -1, 2),
                                    expected.reshape(len(crops), -1, 2), eye_corners)
        return {**metrics.summarize(nmes), "nmes": nmes.tolist(),
                "mse": float(np.mean(((got - expected) * crops.shape[1]) ** 2))}
    return score


def empty_row(model, mode, note):
    keys = ("nme", "fr", "auc", "mse", *LATENCY_KEYS, "size_kb", "dtype_check_ok")
    return {"model": model, "mode": mode, **dict.fromkeys(keys), "note": note}


def benchmark(models, representative, score, sample_image, runs, modes=MODES, out_dir=None):
    """Rows for each model × mode (+ int8_selective on the float model)."""
    rows, layers, denied, timed = [], [], [], []
    jobs = [(m, mode) for m in models for mode in modes]
    if "float" in models and "int8_only" in modes:
        jobs.append(("float", "int8_selective"))
    for model, mode in tqdm(jobs, desc="conversions", unit="model"):
        tqdm.write(f"{model} / {mode}")
        try:
            if mode == "int8_selective":
                layers, denied, content = layer_errors(models[model], representative)
            else:
                content = convert(models[model], mode, representative)
        except ConversionError as err:
            rows.append(empty_row(model, mode, f"not supported: {err}"))
            continue
        ok, note = check_dtypes(content, mode)
        if mode == "int8_selective":
            note = f"float: {', '.join(denied)}" + (f"; {note}" if note else "")
        elif not ok:
            note = f"NOT AS PROMISED: {note}"
        row = {"model": model, "mode": mode, **measure(content, score),
               "dtype_check_ok": ok, "note": note}
        rows.append(row)
        timed.append((row, content))
        if out_dir is not None:
            (Path(out_dir) / "tflite").mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / "tflite" / f"{model}_{mode}.tflite").write_bytes(content)
    time_rows(timed, sample_image, runs)
    return rows, layers, denied


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--float_model", default="exported")
    p.add_argument("--qat_model", default="exported_quantized")
    p.add_argument("--test_record", default=None,
                   help=f"labelled faces (default {DEFAULT_TEST_RECORD}; label-free mode "
                        f"when the default is absent; a record named here must exist)")
    p.add_argument("--rep_record", default=None,
                   help=f"calibration faces (default {DEFAULT_REP_RECORD}; crops from "
                        f"--images when the default is absent)")
    p.add_argument("--num_calibration", type=int, default=200)
    p.add_argument("--runs", type=int, default=200, help="timed invokes per latency")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--out_dir", default="results")
    p.add_argument("--keep_tflite", action="store_true", help="also save every .tflite")
    p.add_argument("--images", default="test_images",
                   help="label-free mode (no --test_record file): faces found in these images")
    args = p.parse_args(argv)
    for flag in ("test_record", "rep_record"):
        given = getattr(args, flag)
        if given is not None and not Path(given).is_file():
            p.error(f"--{flag} {given}: no such file")
    problem = unwritable(Path(args.out_dir), folder=True)  # before minutes of conversions
    if problem:
        p.error(f"--out_dir {args.out_dir}: {problem}")
    args.test_record = args.test_record or DEFAULT_TEST_RECORD
    args.rep_record = args.rep_record or DEFAULT_REP_RECORD
    return args


DEFAULT_TEST_RECORD, DEFAULT_REP_RECORD = "tfrecords/test.record", "tfrecords/train.record"


def main(argv=None):
    args = parse_args(argv)
    models = {}
    try:
        for name, path in (("float", args.float_model), ("qat", args.qat_model)):
            card = landmark.load_saved_model(path)[1]  # a clear error for a non-model
            models[name] = path
        crops = None
        if Path(args.test_record).is_file():
            test = args.test_record
            scoring = "NME against the labels"
            record_layout, num_faces = dataset.record_info(test)
            landmark.check_layouts(card, record_layout, test)
            sample = representative_images(test, 1)[0]
            score = label_scorer(test)
        else:
            print(f"no {args.test_record}: label-free mode, scoring each conversion against "
                  f"the float model's float32 marks on the faces in {args.images}")
            crops = face_crops(image_paths([args.images]))
            if not len(crops):
                raise ValueError(f"no face found in {args.images}")
            test, num_faces, sample = args.images, len(crops), crops[0]
            scoring = "label-free: NME against the float model's float32 marks, no labels"
        if Path(args.rep_record).is_file():
            representative = representative_images(args.rep_record, args.num_calibration)
        else:
            paths = image_paths([args.images])
            faces = len(crops) if crops is not None else len(face_crops(paths))
            copies = -(-args.num_calibration // max(1, faces))
            representative = face_crops(paths, copies=copies, jitter=0.1)[:args.num_calibration]
            print(f"no {args.rep_record}: calibrating on {len(representative)} jittered face "
                  f"crops from {args.images}")
        if scoring.startswith("label-free"):
            reference = TFLiteModel(convert(models["float"], "float32", representative),
                                    num_threads=os.cpu_count())
            score = agreement_scorer(reference, crops, card["layout"])
    except (FileNotFoundError, ValueError, ConversionError) as err:
        sys.exit(f"error: {err}")
    rows, layers, denied = benchmark(models, representative, score, sample, args.runs,
                                     args.modes, args.out_dir if args.keep_tflite else None)
    report = {"test_record": test, "scoring": scoring, "num_faces": num_faces,
              "num_calibration": len(representative), "runs": args.runs, "timing": "in turn",
              "cpu_count": os.cpu_count(), "cpu": cpu_info(), "models": models, "rows": rows,
              "layers": layers, "denylisted": denied, "summary": summary_lines(rows)}
    write_report(report, args.out_dir)


def write_report(report, out_dir):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_ced(report, out_dir / "ced.png")
    (out_dir / "ptq_benchmark.md").write_text(markdown(report))
    (out_dir / "ptq_benchmark.json").write_text(json.dumps(report, indent=1))
    print(markdown(report))
    print(f"wrote {out_dir}/ptq_benchmark.md, ptq_benchmark.json, ced.png")


if __name__ == "__main__":
    main()
