"""Train, fine-tune with quantization-aware training, export and evaluate.

    python landmark.py --train_record tfrecords/train.record \
        --val_record tfrecords/test.record --model resnet --epochs 120
    python landmark.py --quantization ...           # QAT from checkpoints/
    python landmark.py --export_only [--quantization]
    python landmark.py --eval_only --hard_view --metrics_out results/val.json

Losses and the heatmap regulariser are in losses.py, the training
callbacks (throughput, weight average, calm phase) in callbacks.py.

Checkpoints: `--checkpoint_dir` (float) or `--qat_checkpoint_dir` (QAT)
hold best.weights.h5 (lowest validation NME), last.weights.h5,
resume.npz (what `--initial_epoch` goes on from: raw weights, optimizer
and weight-average state) and model.json (architecture and layout).
Exports are SavedModels with a landmark.json beside saved_model.pb
(input size, marks, layout).
"""
import argparse
import csv
import json
import sys
import zipfile
from pathlib import Path

import keras_env  # noqa: F401  (must precede TensorFlow)
import numpy as np
import tensorflow as tf
from tqdm import tqdm

import dataset
import geometry
import hard_view
import metrics
from callbacks import CalmAugmentation, EpochTimer, ResumeState, WeightAverage
from losses import LOSS_NAMES, HeatmapRegularised, make_loss, nme_metric
from layouts import WFLW_ATTRIBUTES, flip_averaged, get_layout
import network
from network import (HEADS, MODELS, RESNET_STAGES, STEM_BLOCKS, STEM_FILTERS, build_model,
                     parse_stages, parse_stem)
from tflite_model import cpu_info

keras = tf.keras
MODEL_CARD = "landmark.json"
# Share of each epoch drawn from --profiled_record when no --profiled_share is given.
PROFILED_SHARE = 0.25


def str2bool(value):
    """argparse type for the original's `--flag=True/False` booleans."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


# ------------------------------------------------------------- checkpoints --

def qat_wrap(model, weight_bits=8):
    """tfmot's QAT wrapping: its default 8-bit scheme, or its experimental
    n-bit scheme (same layer patterns and BN folding, `weight_bits`-bit
    weights, 8-bit activations) for other widths. An integral head's float
    tail (network.INTEGRAL_TAIL) is left unquantized: it is not exported."""
    import tensorflow_model_optimization as tfmot
    keras_q = tfmot.quantization.keras
    if network.scores_model(model) is model:
        annotated = keras_q.quantize_annotate_model(model)
    else:
        annotated = keras.models.clone_model(model, clone_function=lambda layer: (
            layer if layer.name in network.INTEGRAL_TAIL
            else keras_q.quantize_annotate_layer(layer)))
    if weight_bits == 8:
        return keras_q.quantize_apply(annotated)
    scheme = keras_q.experimental.default_n_bit.DefaultNBitQuantizeScheme(
        num_bits_weight=weight_bits, num_bits_activation=8)
    return keras_q.quantize_apply(annotated, scheme)


def make_model(card, quantize=False):
    """Keras model described by a model card; QAT-wrapped if `quantize`."""
    model = build_model(card["model"], card["num_marks"], card["input_size"],
                        **card.get("options", {}))
    if quantize:
        model = qat_wrap(model, card.get("weight_bits", 8))
    return model


def load_export_weights(model, export_dir):
    """Set `model`'s weights from a float model exported by landmark.py.
    An export is `network.scores_model(model)` saved, so its variables come
    in that model's order (their names carry the exporting process's layer
    counters, so order and shapes are what is matched)."""
    saved = list(tf.saved_model.load(str(export_dir)).variables)
    wanted = list(network.scores_model(model).variables)
    if len(saved) != len(wanted):
        raise ValueError(f"{export_dir} holds {len(saved)} variables, this model "
                         f"{len(wanted)}: not an export of the same architecture")
    for weight, value in zip(wanted, saved):
        if tuple(value.shape) != tuple(weight.shape):
            raise ValueError(f"{export_dir}: variable {value.name} is {tuple(value.shape)}, the "
                             f"model's {weight.name} is {tuple(weight.shape)}: not an export "
                             f"of the same architecture")
        weight.assign(value)


def load_checkpoint(checkpoint_dir, quantize=False, which="best"):
    """(model, card) from `checkpoint_dir`/{which}.weights.h5 + model.json."""
    checkpoint_dir = Path(checkpoint_dir)
    card_path, weights = checkpoint_dir / "model.json", checkpoint_dir / f"{which}.weights.h5"
    if not card_path.is_file() or not weights.is_file():
        raise FileNotFoundError(f"no checkpoint in {checkpoint_dir}/ (need model.json and "
                                f"{weights.name}); train first")
    card = json.loads(card_path.read_text())
    model = make_model(card, quantize)
    model.load_weights(str(weights))
    return model, card


def calibrate_qat_ranges(qat_model, float_model, images):
    """Start every activation range of a fresh QAT model at the range the
    float model shows on `images`.

    tfmot starts each range at ±6 and moves it by an EMA with decay 0.999
    per step, so a fine-tune of a few thousand steps would end with ranges
    still ~±2 (an int8 step of ~2 px on outputs that span 0-1) and the pixel
    input clipped at first. Returns {layer: (low, high)}.
    """
    wrappers = {layer.layer.name: layer for layer in qat_model.layers if hasattr(layer, "layer")}
    probe = keras.Model(float_model.input,
                        [float_model.get_layer(name).output for name in wrappers])
    # Each layer's extremes batch by batch: holding every layer's outputs for
    # all the images at once took over 24 GB for run v32's network.
    lows, highs = np.zeros(len(wrappers)), np.zeros(len(wrappers))
    for start in range(0, len(images), 64):
        outputs = probe(images[start:start + 64], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        lows = np.minimum(lows, [float(tf.reduce_min(v)) for v in outputs])
        highs = np.maximum(highs, [float(tf.reduce_max(v)) for v in outputs])
    ranges = {}
    for (name, wrapper), low, high in zip(wrappers.items(), lows, highs):
        low, high = float(low), float(high)
        for variable in wrapper.weights:
            role = variable.name.split("/")[-1].split(":")[0]
            if role in ("output_min", "post_activation_min"):
                variable.assign(low)
                ranges[name] = (low, high)
            elif role in ("output_max", "post_activation_max"):
                variable.assign(high)
    for layer in qat_model.layers:   # the input: pixels, exactly 0-255 (scale 1)
        for variable in layer.weights:
            if variable.name.endswith("quantize_layer_min:0"):
                variable.assign(0.0)
            elif variable.name.endswith("quantize_layer_max:0"):
                variable.assign(255.0)
    return ranges


def export(model, card, export_dir):
    """SavedModel of `model` with its card as landmark.json inside. An
    integral-head model is saved up to its score maps (network.scores_model);
    load_saved_model and TFLiteModel decode them."""
    export_dir = Path(export_dir)
    if export_dir.exists() and not export_dir.is_dir():
        raise ValueError(f"export folder {export_dir} is a file")
    make_output_dir(export_dir.parent)
    partial = export_dir.with_name(export_dir.name + ".partial")
    scores = network.scores_model(model)
    if scores is not model:
        card = {**card, "output": SCORE_MAPS_OUTPUT}
    tf.saved_model.save(scores, str(partial))
    (partial / MODEL_CARD).write_text(json.dumps(card, indent=1))
    if export_dir.exists():
        import shutil
        shutil.rmtree(export_dir)
    partial.rename(export_dir)
    print(f"exported {card['model']} ({'QAT' if card.get('quantized') else 'float'}) "
          f"-> {export_dir}/")


SCORE_MAPS_OUTPUT = ("score maps (B, h, h, N): each mark is its expected cell centre under a "
                     "softmax over the cells (geometry.decode_scores), (x, y) in the crop "
                     "divided by input_size")


def load_saved_model(path, raw=False):
    """(predict_fn, card) of an exported SavedModel directory; with `raw`,
    predict_fn returns the model's outputs undecoded (score maps stay maps)."""
    path = Path(path)
    if not (path / "saved_model.pb").is_file() or not (path / MODEL_CARD).is_file():
        raise FileNotFoundError(f"{path} is not a model exported by landmark.py "
                                f"(needs saved_model.pb and {MODEL_CARD})")
    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]

    def predict(images):
        outputs = next(iter(serve(tf.convert_to_tensor(np.asarray(images, np.float32)))
                            .values())).numpy()
        return outputs if raw else geometry.decode_scores(outputs)
    predict.keep_alive = loaded  # the signature needs its variables alive
    return predict, json.loads((path / MODEL_CARD).read_text())


# --------------------------------------------------------------- evaluate --

def _named_errors(batches, record_path):
    """Iterate `batches`, turning a record that parses badly into a
    ValueError that names the file."""
    iterator = iter(batches)
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except tf.errors.InvalidArgumentError as err:
            raise ValueError(f"{record_path}: a face cannot be read ({err.message.splitlines()[0]})"
                             ) from None


def check_layouts(card, record_layout, record_path):
    """Refuse, naming both, a model and a record of different mark layouts."""
    model_layout = card.get("layout") or f"{card.get('num_marks')} marks"
    if model_layout != record_layout:
        raise ValueError(f"the model marks {model_layout} ({card.get('num_marks')} marks) but "
                         f"{record_path} holds {record_layout} faces "
                         f"({get_layout(record_layout).num_marks} marks)")


def _check_output(preds, layout, record_path):
    if preds.shape[-1] != 2 * layout.num_marks:
        raise ValueError(f"the model gives {preds.shape[-1] // 2} marks but {record_path} holds "
                         f"{layout.name} faces ({layout.num_marks} marks)")


def evaluate(predict_fn, record_path, batch_size=64, desc="evaluating"):
    """Score `predict_fn` (images (B,128,128,3) -> (B, 2N)) on a record.

    NME, FR and AUC use marks in original image pixels; MSE is per
    coordinate in 128-pixel crop units (the original repo's table).
    Returns a dict; `nmes` holds each face's NME.
    """
    layout_name, count = dataset.record_info(record_path)
    layout = get_layout(layout_name)
    preds, truths, transforms, attributes, sources = [], [], [], [], []
    batches = dataset.eval_dataset(record_path, batch_size, layout_name, with_info=True)
    with tqdm(total=count, desc=desc, unit="face", leave=False) as bar:
        for images, targets, info in _named_errors(batches, record_path):
            preds.append(np.asarray(predict_fn(images.numpy()), np.float64))
            _check_output(preds[-1], layout, record_path)
            truths.append(targets.numpy())
            transforms.append(info["transform"].numpy())
            attributes.append(info["attributes"].numpy())
            sources += [s.decode() for s in info["source"].numpy()]
            bar.update(len(images))
    preds, truths = np.concatenate(preds), np.concatenate(truths)
    transforms, attributes = np.concatenate(transforms), np.concatenate(attributes)
    pred_px = geometry.to_image(dataset.targets_to_store(preds), transforms)
    true_px = geometry.to_image(dataset.targets_to_store(truths), transforms)
    nmes = metrics.nme_per_face(pred_px, true_px, layout.eye_corners)
    groups = [source_group(s) for s in sources]
    result = _scores(nmes, np.array(groups))
    result["per_region"] = metrics.region_errors(pred_px, true_px, layout.eye_corners,
                                                 layout.regions)
    result["groups"] = groups
    result["mse"] = float(np.mean(((preds - truths) * geometry.MODEL_SIZE) ** 2))
    result.update(num_faces=len(nmes), layout=layout_name, nmes=nmes.tolist())
    if (attributes >= 0).all():
        result["per_attribute_nme"] = {
            name: float(nmes[attributes[:, i] == 1].mean())
            for i, name in enumerate(WFLW_ATTRIBUTES) if (attributes[:, i] == 1).any()}
    return result


def source_group(source):
    """The folder a face's photo came from (its validation group)."""
    return Path(source).parent.name or "."


def _scores(nmes, groups):
    """summarize() of all faces, and of each group when there are several."""
    result = {**metrics.summarize(nmes), "num_faces": len(nmes)}
    if len(set(groups)) > 1:
        result["per_group"] = {g: {**metrics.summarize(nmes[groups == g]),
                                   "num_faces": int((groups == g).sum())}
                               for g in sorted(set(groups))}
    return result


def evaluate_hard(predict_fn, record_path, seed=hard_view.SEED, batch_size=64):
    """Score `predict_fn` on the hard view of a record's faces
    (hard_view.KINDS, one view of each face per kind, seeded; and the
    profile kind where the 3D face model is present). NME is taken in the
    view's own crop pixels, where its moved marks are the truth. Returns
    {"kinds": {kind: scores with nmes}, "all": scores over every kind's
    faces but profile}; scores are split by photo folder (per_group)."""
    layout_name, count = dataset.record_info(record_path)
    layout = get_layout(layout_name)
    faces = list(dataset._load(record_path, layout.num_marks).as_numpy_iterator())
    store_images = [f["image"] for f in faces]
    store_marks = [f["marks"] for f in faces]
    groups = np.array([source_group(f["source"].decode()) for f in faces])

    def score(images, truth):
        preds = np.concatenate([np.asarray(predict_fn(images[i:i + batch_size].astype(np.float32)),
                                           np.float64)
                                for i in range(0, len(images), batch_size)])
        _check_output(preds, layout, record_path)
        pred = preds.reshape(len(images), -1, 2) * geometry.MODEL_SIZE
        nmes = metrics.nme_per_face(pred, truth, layout.eye_corners)
        return {**_scores(nmes, groups), "nmes": nmes.tolist()}

    kinds = {}
    for kind in tqdm(hard_view.KINDS, desc="hard view", unit="kind", leave=False):
        images, truth = hard_view.views(store_images, store_marks, kind, seed)
        kinds[kind] = score(images, truth)
        if kind == "yaw":
            # The squash narrows the eyes to about 0.68 of the face's own
            # distance, so its NME grows by the normaliser alone; this is
            # the same error over the unturned face's eye distance.
            left, right = layout.eye_corners
            unturned_marks = np.stack(store_marks)
            ratio = (np.linalg.norm(truth[:, left] - truth[:, right], axis=-1)
                     / np.linalg.norm(unturned_marks[:, left] - unturned_marks[:, right], axis=-1))
            unturned = np.asarray(kinds[kind]["nmes"]) * ratio
            kinds[kind]["unturned"] = {**_scores(unturned, groups), "nmes": unturned.tolist()}
    everything = np.concatenate([kinds[kind]["nmes"] for kind in hard_view.KINDS])
    if layout_name == "300w68":
        profiled = hard_view.profile_views(store_images, store_marks, seed)
        if profiled is not None:
            kinds[hard_view.PROFILE] = score(*profiled)
    return {"seed": seed, "kinds": kinds, "groups": groups.tolist(),
            "all": _scores(everything, np.tile(groups, len(hard_view.KINDS)))}


def history_rows(checkpoint_dir):
    """The rows of a run's history.csv (Keras' CSVLogger), [] if it has none."""
    path = Path(checkpoint_dir) / "history.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def read_card(checkpoint_dir):
    """A run's model.json as a dict, None if it has none or it does not parse."""
    try:
        return json.loads((Path(checkpoint_dir) / "model.json").read_text())
    except (OSError, ValueError):
        return None


STOPPED_EPOCH = 10  # an epoch this many times the median's length was a stopped process


def training_summary(checkpoint_dir, images_per_epoch):
    """Epochs, best epoch, throughput and training minutes from a run's
    history.csv (an epoch's seconds include its validation pass), with the
    CPUs its model.json names."""
    rows = history_rows(checkpoint_dir)
    if not rows:
        return None
    best = min(rows, key=lambda r: float(r["val_nme"]))
    speeds = np.array([float(r["images_per_s"]) for r in rows])
    median = float(np.median(speeds))
    # Before EpochTimer left out the time a process was stopped, an epoch
    # held across a stop logged it all: such an epoch counts at the median.
    stopped = speeds < median / STOPPED_EPOCH
    seconds = images_per_epoch / np.where(stopped, median, speeds)
    summary = {"epochs": len(rows), "best_epoch": int(best["epoch"]) + 1,
               "best_val_nme_in_training": float(best["val_nme"]),
               "images_per_s_median": median, "train_minutes": float(seconds.sum()) / 60}
    if stopped.any():
        summary["stopped_epochs_at_median"] = [int(r["epoch"]) + 1
                                               for r, s in zip(rows, stopped) if s]
    cpus = (read_card(checkpoint_dir) or {}).get("cpus")
    return {**summary, "cpus": sorted(set(cpus))} if cpus else summary


def average_models(predict_fn, export_dirs, card):
    """predict_fn averaged with the exported models in `export_dirs`, which
    must mark the same layout at the same input size."""
    fns = [predict_fn]
    for path in export_dirs:
        other, other_card = load_saved_model(path)
        for key in ("layout", "input_size"):
            if other_card[key] != card[key]:
                raise ValueError(f"--average_with {path}: its {key} is {other_card[key]!r}, "
                                 f"the evaluated model's is {card[key]!r}")
        fns.append(other)
    return lambda images: np.mean([np.asarray(fn(images), np.float64) for fn in fns], axis=0)


def write_metrics(result, path, **extra):
    """Write an evaluation as JSON (per-face NMEs kept in `nmes`)."""
    path = Path(path)
    make_output_dir(path.parent)
    path.write_text(json.dumps({**extra, **result}, indent=1))
    print(f"wrote {path}")


# ------------------------------------------------------------------ train --

def augmentation_settings(args, inherited):
    """Augmentation ranges: flags given > the float run's (for QAT) > defaults."""
    defaults = {"rotation_deg": dataset.ROTATION_DEG, "shift_fraction": dataset.SHIFT_FRACTION,
                "scale_jitter": round(1 - dataset.SCALE_RANGE[0], 6),
                "occlusion": dataset.OCCLUSION, "calm_epochs": 0, "wild": 0.0,
                "calm_rotation_deg": dataset.CALM["rotation_deg"],
                "profiled_record": None, "profiled_share": 0.0}
    given = {"rotation_deg": args.rotation, "shift_fraction": args.shift,
             "scale_jitter": args.scale_jitter, "occlusion": args.occlusion,
             "calm_epochs": args.calm_epochs, "wild": args.wild,
             "calm_rotation_deg": args.calm_rotation, "profiled_record": args.profiled_record,
             "profiled_share": args.profiled_share}
    return {k: given[k] if given[k] is not None else inherited.get(k, defaults[k])
            for k in defaults}


def make_optimizer(schedule, weight_decay):
    """Adam, or AdamW when `weight_decay` > 0: decoupled decay (scaled by the
    learning rate) on the kernels only; BatchNorm scales/offsets and biases
    are left alone."""
    if not weight_decay:
        return keras.optimizers.Adam(schedule)
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer


PRECISIONS = ("auto", "float32", "mixed_bfloat16")


def cpu_has_bf16():
    """True where the CPU has bfloat16 instructions (AVX512-BF16 or AMX);
    elsewhere TensorFlow emulates bf16, slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def set_precision(requested, quantization=False):
    """Set Keras' global dtype policy for training and return its name.
    'auto' picks mixed_bfloat16 where cpu_has_bf16(), else float32. QAT
    always trains in float32: tfmot's fake-quant ops are float32-only."""
    if quantization:
        chosen = "float32"
    elif requested == "auto":
        chosen = "mixed_bfloat16" if cpu_has_bf16() else "float32"
    else:
        chosen = requested
    keras.mixed_precision.set_global_policy(chosen)
    why = ("QAT" if quantization else "CPU has bf16 instructions" if chosen != "float32"
           else "no bf16 instructions" if requested == "auto" else "asked for")
    print(f"precision: {chosen} ({why}; --precision {requested})")
    return chosen


def strategy_for_devices():
    gpus = tf.config.list_physical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def train(args):
    layout_name, train_count = dataset.record_info(args.train_record)
    val_layout, val_count = dataset.record_info(args.val_record)
    if val_layout != layout_name:
        raise ValueError(f"{args.train_record} holds {layout_name} marks but "
                         f"{args.val_record} holds {val_layout}")
    layout = get_layout(layout_name)
    if train_count < args.batch_size:
        raise ValueError(f"--batch_size {args.batch_size} is larger than the {train_count} "
                         f"training faces of {args.train_record}")
    if args.quantization:   # before any folder is made: QAT needs the float run
        load_checkpoint(args.checkpoint_dir, which=args.checkpoint)
    checkpoint_dir = Path(args.qat_checkpoint_dir if args.quantization else args.checkpoint_dir)
    make_output_dir(checkpoint_dir)
    resume_from = checkpoint_dir / "last.weights.h5"
    if args.initial_epoch and not resume_from.is_file():
        raise FileNotFoundError(f"--initial_epoch {args.initial_epoch}: no {resume_from} to resume from")
    resume_state = load_resume_state(checkpoint_dir / "resume.npz", args.initial_epoch, args.epochs)
    steps = train_count // args.batch_size
    print(f"{layout_name}: {train_count} training faces ({steps} steps of {args.batch_size}), "
          f"{val_count} validation faces")

    precision = set_precision(args.precision, args.quantization)
    strategy = strategy_for_devices()
    with strategy.scope():
        if args.quantization:
            # QAT starts from the best float weights, with the float run's
            # augmentation unless flags say otherwise.
            float_model, float_card = load_checkpoint(args.checkpoint_dir, which=args.checkpoint)
            model = qat_wrap(float_model, args.weight_bits)
            calibration = next(iter(dataset.eval_dataset(args.train_record, 512, layout_name)))[0]
            ranges = calibrate_qat_ranges(model, float_model, calibration.numpy())
            print(f"QAT ranges calibrated on {len(calibration)} training crops; output layer "
                  f"{list(ranges)[-1]}: {ranges[list(ranges)[-1]]}")
            card = {**float_card, "quantized": True, "weight_bits": args.weight_bits,
                    "loss": args.loss or float_card.get("loss", "wing"),
                    "heatmap_loss": heatmap_settings(args, float_card.get("heatmap_loss")),
                    "weight_decay": args.weight_decay, "weight_average": args.weight_average,
                    "augmentation": augmentation_settings(
                args, float_card.get("augmentation", {}))}
        else:
            card = {"model": args.model, "num_marks": layout.num_marks, "layout": layout_name,
                    "input_size": geometry.MODEL_SIZE, "crop_scale": geometry.CROP_SCALE,
                    "output": "marks (x, y) in the model crop divided by input_size",
                    "input": "RGB pixels 0-255", "quantized": False, "loss": args.loss or "wing",
                    "heatmap_loss": heatmap_settings(args, None),
                    "weight_decay": args.weight_decay, "weight_average": args.weight_average,
                    "augmentation": augmentation_settings(args, {}),
                    "options": model_options(args)}
            if args.init_from:
                # The architecture is the export's; training settings are the flags'.
                _, start_card = load_saved_model(args.init_from)
                if start_card.get("quantized") or start_card["layout"] != layout_name:
                    raise ValueError(f"--init_from {args.init_from}: needs a float {layout_name} "
                                     f"export, found a {'QAT' if start_card.get('quantized') else 'float'}"
                                     f" {start_card['layout']} one")
                card.update(model=start_card["model"], options=start_card.get("options", {}),
                            init_from=str(args.init_from))
            model = make_model(card)
            if args.init_from and not args.initial_epoch:
                load_export_weights(model, args.init_from)
                print(f"weights from {args.init_from}")
        augmentation = card["augmentation"]
        if args.initial_epoch:
            model.load_weights(str(resume_from))
        total = args.epochs * steps
        warmup = min(steps * 3, total // 10) if not args.quantization else 0
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else args.lr, total - warmup, alpha=0.01,
            warmup_target=args.lr if warmup else None, warmup_steps=warmup)
        optimizer = make_optimizer(schedule, args.weight_decay)
        loss, metric = make_loss(card["loss"], layout), nme_metric(layout)
        if card["heatmap_loss"]:
            trained = HeatmapRegularised(model, card["heatmap_loss"]["weight"],
                                         card["heatmap_loss"]["sigma"], loss, metric)
            trained.compile(optimizer=optimizer)
        else:
            trained = model
            trained.compile(optimizer=optimizer, loss=loss, metrics=[metric])
        if resume_state:
            ResumeState.restore(resume_state, trained, checkpoint_dir / "resume.npz")
        elif args.initial_epoch:
            # The schedule reads the optimizer's step count: go on from where
            # the run stopped, not from the warm-up. Adam's moments start
            # afresh; with --weight_average the average restarts from the
            # saved weights, which are the old average.
            trained.optimizer.iterations.assign(args.initial_epoch * steps)
    card["precision"] = precision
    # A run resumed after its last epoch (stopped during QAT or export)
    # trains nothing and goes on from its checkpoints.
    left = args.epochs - args.initial_epoch
    if not left:
        print(f"all {args.epochs} epochs trained already: going on from {checkpoint_dir}'s checkpoints")
    # The CPUs a run trained on, one per start: a resumed run may move machines.
    before = (read_card(checkpoint_dir) or {}) if args.initial_epoch else {}
    card["cpus"] = [*before.get("cpus", []), *([cpu_info()["model"]] if left else [])]
    (checkpoint_dir / "model.json").write_text(json.dumps(card, indent=1))

    # The weight average must be swapped in before the checkpoints save.
    average = WeightAverage(args.weight_average, resume_state) if args.weight_average else None
    callbacks = [average] if average else []
    callbacks += [
        ResumeState(checkpoint_dir / "resume.npz", average),
        EpochTimer(steps * args.batch_size),
        keras.callbacks.ModelCheckpoint(str(checkpoint_dir / "best.weights.h5"),
                                        monitor="val_nme", mode="min",
                                        save_best_only=True, save_weights_only=True,
                                        initial_value_threshold=best_so_far(
                                            checkpoint_dir, args.initial_epoch)),
        keras.callbacks.ModelCheckpoint(str(checkpoint_dir / "last.weights.h5"),
                                        save_weights_only=True),
        keras.callbacks.CSVLogger(str(checkpoint_dir / "history.csv"),
                                  append=bool(args.initial_epoch)),
        keras.callbacks.TensorBoard(str(Path("logs") / checkpoint_dir.name),
                                    profile_batch=0),
    ]
    calm = None
    if augmentation.get("calm_epochs"):
        calm = tf.Variable(False, trainable=False)
        callbacks.insert(0, CalmAugmentation(calm, args.epochs - augmentation["calm_epochs"]))
    jitter = augmentation["scale_jitter"]
    # One iterator for the whole run (repeat + steps_per_epoch): Keras made a
    # new one each epoch, and freeing the old one waited about 11 s an epoch
    # for the pipeline's threads (a third of an epoch of the bundled recipes).
    if left:
        trained.fit(dataset.train_dataset(args.train_record, args.batch_size, layout_name,
                                        rotation_deg=augmentation["rotation_deg"],
                                        shift_fraction=augmentation["shift_fraction"],
                                        scale_range=(1 - jitter, 1 + jitter),
                                        occlusion=augmentation["occlusion"], calm=calm,
                                        wild=augmentation["wild"],
                                        calm_rotation_deg=augmentation["calm_rotation_deg"],
                                        profiled=augmentation["profiled_record"],
                                        profiled_share=augmentation["profiled_share"]).repeat(),
                  steps_per_epoch=steps,
                  validation_data=dataset.eval_dataset(args.val_record, 64, layout_name),
                  epochs=args.epochs, initial_epoch=args.initial_epoch,
                  callbacks=callbacks, verbose=2)
    # Later steps (export, evaluation) run a float32 copy of the weights.
    keras.mixed_precision.set_global_policy("float32")
    if precision != "float32":
        weights = model.get_weights()
        model = make_model(card, args.quantization)
        model.set_weights(weights)
    # What later steps use: the best on the validation faces, or the last
    # when those faces were trained on (--checkpoint last).
    model.load_weights(str(checkpoint_dir / f"{args.checkpoint}.weights.h5"))
    return model, card


def make_output_dir(path):
    """Create `path` (and parents), or raise ValueError saying why not."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output folder {path} is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"cannot write to output folder {path}: {err.strerror}") from None


def load_resume_state(path, initial_epoch, epochs):
    """ResumeState.load(path) when resuming after `initial_epoch` epochs and
    `path` holds that epoch's state; otherwise None, and the log says that
    the resumed run goes on from last.weights.h5 with a fresh optimizer.
    A run said to be done (`initial_epoch` == `epochs`) must be, by `path`."""
    if not initial_epoch:
        return None
    try:
        state = ResumeState.load(path) if Path(path).is_file() else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:   # damaged or foreign
        raise ValueError(f"{path}: not a resume state ({err}); delete it to resume "
                         "from last.weights.h5 with a fresh optimizer") from None
    if state and initial_epoch == epochs and state["epochs_done"] != epochs:
        raise ValueError(f"--initial_epoch {initial_epoch}: {path} says {state['epochs_done']} "
                         f"epochs were trained, not all {epochs}; resume with --initial_epoch "
                         f"{state['epochs_done']}")
    if state and state["epochs_done"] == initial_epoch:
        print(f"resuming from {path}: weights, optimizer and weight average after "
              f"epoch {initial_epoch}")
        return state
    why = (f"{path} is from after epoch {state['epochs_done']}" if state
           else f"no {path} (written by runs since 2026-12-06)")
    print(f"resuming from last.weights.h5 with a fresh optimizer: {why}")
    return None


def best_so_far(checkpoint_dir, initial_epoch):
    """The lowest validation NME in `checkpoint_dir`'s history.csv over the
    first `initial_epoch` epochs, so that a resumed run replaces
    best.weights.h5 only with a better model; None for a fresh run."""
    scores = [float(row["val_nme"]) for row in history_rows(checkpoint_dir)
              if int(row["epoch"]) < initial_epoch and row.get("val_nme")]
    return min(scores) if scores else None


def heatmap_settings(args, inherited):
    """The card's heatmap regulariser: {"weight", "sigma"} or None (off).
    Flags given > the float run's (for QAT) > off."""
    if args.heatmap_loss is None:
        return inherited
    if not args.heatmap_loss:
        return None
    return {"weight": args.heatmap_loss, "sigma": args.heatmap_sigma}


def model_options(args):
    """The builder options a new float run was given (kept in its card)."""
    options = {}
    if args.head_channels:
        options["head_channels"] = args.head_channels
    if args.head != "dense":
        options["head"] = args.head
    if args.integral_cells is not None:
        options["integral_cells"] = args.integral_cells
    if args.stages is not None:
        options["stages"] = [list(stage) for stage in parse_stages(args.stages)]
    if args.stem is not None:
        options["stem"] = list(parse_stem(args.stem))
    return options


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    flag = {"type": str2bool, "nargs": "?", "const": True, "default": False}
    p.add_argument("--train_record", default="tfrecords/train.record")
    p.add_argument("--val_record", default="tfrecords/test.record")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default 2e-3 float, 1e-4 QAT)")
    p.add_argument("--loss", choices=LOSS_NAMES, default=None,
                   help="default wing (QAT: the float run's); wing_nme: Wing loss with faces "
                        "weighted as NME weighs them")
    p.add_argument("--model", choices=sorted(MODELS), default="resnet")
    p.add_argument("--head_channels", type=int, default=None,
                   help="resnet: width of the head: the 4×4 map feeding the dense output, or "
                        "the integral head's top-down path (default 64)")
    p.add_argument("--head", choices=HEADS, default="dense",
                   help="resnet: 'dense' regresses marks from the last map; 'integral' takes "
                        "each mark's expected position under a softmax over 16×16 cells")
    p.add_argument("--integral_cells", type=int, choices=(16, 32), default=None,
                   help="integral head: cells a side of the score maps (default 16)")
    p.add_argument("--stages", default=None,
                   help="resnet: FILTERSxBLOCKS per stage, each halving the map (default "
                        + ",".join(f"{f}x{b}" for f, b in RESNET_STAGES) + ")")
    p.add_argument("--stem", default=None, metavar="FILTERSxBLOCKS",
                   help="resnet: the first, strided convolution's filters and the residual "
                        f"blocks of that width after it, at 64 px (default "
                        f"{STEM_FILTERS}x{STEM_BLOCKS})")
    p.add_argument("--rotation", type=float, default=None,
                   help=f"augmentation: largest rotation, degrees (default {dataset.ROTATION_DEG}; "
                        f"QAT: the float run's)")
    p.add_argument("--scale_jitter", type=float, default=None,
                   help=f"augmentation: scale drawn from 1 ± this (default "
                        f"{1 - dataset.SCALE_RANGE[0]:.2f}; QAT: the float run's)")
    p.add_argument("--shift", type=float, default=None,
                   help=f"augmentation: largest shift, fraction of the crop (default "
                        f"{dataset.SHIFT_FRACTION}; QAT: the float run's)")
    p.add_argument("--occlusion", type=float, default=None,
                   help="augmentation: probability of hiding a random rectangle of the face "
                        f"(default {dataset.OCCLUSION}; QAT: the float run's)")
    p.add_argument("--wild", type=float, default=None, metavar="STRENGTH",
                   help="in-the-wild augmentation (dataset.WILD: light, textured occluders, "
                        "low resolution, blur, noise, JPEG, yaw-like warp), each condition's "
                        "probability times STRENGTH (default 0; QAT: the float run's)")
    p.add_argument("--calm_rotation", type=float, default=None, metavar="DEG",
                   help=f"rotation range of the calm phase (default "
                        f"{dataset.CALM['rotation_deg']:g}; QAT: the float run's)")
    p.add_argument("--profiled_record", default=None, metavar="RECORD",
                   help="turned training faces from profile_faces.py, mixed in at "
                        "--profiled_share (QAT: the float run's)")
    p.add_argument("--profiled_share", type=float, default=None, metavar="SHARE",
                   help="share of each epoch's faces drawn from --profiled_record "
                        "(default 0.25 with a record; QAT: the float run's)")
    p.add_argument("--calm_epochs", type=int, default=None, metavar="N",
                   help="train the last N epochs with milder augmentation (run v5's ranges, "
                        "no occlusion; default 0; QAT: the float run's)")
    p.add_argument("--heatmap_loss", type=float, default=None, metavar="WEIGHT",
                   help="integral head: add WEIGHT × the Jensen-Shannon divergence between each "
                        "mark's softmax and a Gaussian around its target (DSNT's regulariser; "
                        "default 0: off; QAT: the float run's)")
    p.add_argument("--heatmap_sigma", type=float, default=1.0, metavar="CELLS",
                   help="--heatmap_loss: the Gaussian's standard deviation in cells (default 1)")
    p.add_argument("--weight_decay", type=float, default=0.0,
                   help="AdamW's decoupled weight decay on kernels (default 0: Adam)")
    p.add_argument("--weight_average", type=float, default=0.0, metavar="DECAY",
                   help="validate and checkpoint an exponential moving average of the "
                        "weights (QAT: its ranges too) with this decay per step, e.g. 0.999 "
                        "(default 0: the raw weights; QAT does not inherit the float run's)")
    p.add_argument("--export_only", **flag, help="export the best checkpoint and stop")
    p.add_argument("--eval_only", **flag, help="evaluate and stop")
    p.add_argument("--hard_view", **flag,
                   help="also score the hard view of the validation faces (hard_view.py)")
    p.add_argument("--flip_test", **flag,
                   help="evaluation: average each face with its mirror image (2 passes)")
    p.add_argument("--average_with", nargs="+", default=[], metavar="EXPORT_DIR",
                   help="evaluation: average the marks with these exported models' (an ensemble)")
    p.add_argument("--quantization", **flag,
                   help="quantization-aware training / its checkpoints and export")
    p.add_argument("--weight_bits", type=int, default=8, choices=range(2, 9), metavar="{2..8}",
                   help="QAT weight width (activations stay 8-bit); below 8 the model is "
                        "for simulation in TensorFlow, as TFLite has no such kernels")
    p.add_argument("--checkpoint_dir", default="checkpoints",
                   help="float checkpoints (QAT reads its start from here)")
    p.add_argument("--qat_checkpoint_dir", default="quantized_checkpoints")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which checkpoint --export_only / --eval_only use, and QAT starts "
                        "from ('last' when the validation faces were trained on)")
    p.add_argument("--export_dir", default=None,
                   help="default: exported, or exported_quantized with --quantization")
    p.add_argument("--init_from", default=None, metavar="EXPORT_DIR",
                   help="start a float run from an exported float model's weights and "
                        "architecture (a fine-tune); the flags give everything else")
    p.add_argument("--initial_epoch", type=int, default=0,
                   help="resume an interrupted run from last.weights.h5 at this epoch "
                        "(same --epochs and flags; the learning-rate schedule goes on from there)")
    p.add_argument("--metrics_out", default=None, help="write the evaluation here (JSON)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="training arithmetic: auto picks mixed_bfloat16 where the CPU has "
                        "bf16 instructions, else float32 (QAT: always float32)")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.lr is None:
        args.lr = 1e-4 if args.quantization else 2e-3
    if args.stages is not None:
        try:
            parse_stages(args.stages)
        except ValueError as err:
            p.error(str(err))
    if args.stem is not None:
        try:
            parse_stem(args.stem)
        except ValueError as err:
            p.error(str(err))
    if args.occlusion is not None and not 0 <= args.occlusion <= 1:
        p.error(f"--occlusion is a probability between 0 and 1, got {args.occlusion}")
    if args.init_from and args.quantization:
        p.error("--init_from starts a float run; QAT starts from --checkpoint_dir")
    if args.profiled_share is not None and not 0 <= args.profiled_share < 1:
        p.error(f"--profiled_share is a share in [0, 1), got {args.profiled_share}")
    if args.profiled_share and not args.profiled_record and not args.quantization:
        p.error("--profiled_share needs --profiled_record")
    if args.profiled_record and args.profiled_share is None and not args.quantization:
        args.profiled_share = PROFILED_SHARE
    if args.profiled_record and not Path(args.profiled_record).is_file():
        p.error(f"--profiled_record: record file not found: {args.profiled_record} "
                f"(profile_faces.py writes it)")
    if args.wild is not None and args.wild < 0:
        p.error(f"--wild must be >= 0, got {args.wild}")
    if args.calm_epochs is not None and args.calm_epochs < 0:
        p.error(f"--calm_epochs must be >= 0, got {args.calm_epochs}")
    if args.weight_decay < 0:
        p.error(f"--weight_decay must be >= 0, got {args.weight_decay}")
    if not 0 <= args.weight_average < 1:
        p.error(f"--weight_average is a decay between 0 and 1 (0: off), got {args.weight_average}")
    if not args.export_only and not args.eval_only and not 0 <= args.initial_epoch <= args.epochs:
        p.error(f"--initial_epoch must be in [0, --epochs={args.epochs}], got {args.initial_epoch}")
    if args.heatmap_loss is not None and args.heatmap_loss < 0:
        p.error(f"--heatmap_loss must be >= 0, got {args.heatmap_loss}")
    if args.heatmap_sigma <= 0:
        p.error(f"--heatmap_sigma must be > 0, got {args.heatmap_sigma}")
    if args.heatmap_loss and not args.quantization and args.head != "integral":
        p.error("--heatmap_loss needs --head integral")
    if args.integral_cells is not None and args.head != "integral":
        p.error("--integral_cells needs --head integral")
    return args


def images_per_epoch(args):
    count = dataset.record_info(args.train_record)[1] if Path(args.train_record).is_file() else 0
    return count // args.batch_size * args.batch_size


def keras_predict(model):
    return lambda images: model(images, training=False).numpy()


def main(argv=None):
    args = parse_args(argv)
    default_export = "exported_quantized" if args.quantization else "exported"
    export_dir = args.export_dir or default_export
    checkpoint_dir = args.qat_checkpoint_dir if args.quantization else args.checkpoint_dir
    try:
        if args.metrics_out:   # before hours of training, not after
            make_output_dir(Path(args.metrics_out).parent)
        if args.export_only:
            model, card = load_checkpoint(checkpoint_dir, args.quantization, args.checkpoint)
            export(model, {**card, "quantized": args.quantization}, export_dir)
            return
        if args.eval_only:
            if args.export_dir:
                predict, card = load_saved_model(args.export_dir)
                source = args.export_dir
            else:
                model, card = load_checkpoint(checkpoint_dir, args.quantization, args.checkpoint)
                predict = keras_predict(model)
                source = f"{checkpoint_dir}/{args.checkpoint}.weights.h5"
        else:
            model, card = train(args)
            predict, source = keras_predict(model), f"{checkpoint_dir}/{args.checkpoint}.weights.h5"
        if args.average_with:
            predict, source = average_models(predict, args.average_with, card), \
                " + ".join([source, *args.average_with])
        if args.flip_test:
            predict, source = flip_averaged(predict, card["input_size"]), f"{source} + flip test"
        check_layouts(card, dataset.record_info(args.val_record)[0], args.val_record)
        result = evaluate(predict, args.val_record)
        if args.hard_view:
            result["hard_view"] = evaluate_hard(predict, args.val_record)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    except OSError as err:   # a folder or file that cannot be written
        sys.exit(f"error: {err.filename or ''}: {err.strerror or err}")
    print(f"{source} on {args.val_record}: NME {100 * result['nme']:.3f}%  "
          f"FR@0.10 {100 * result['fr']:.2f}%  AUC@0.10 {result['auc']:.4f}  "
          f"MSE {result['mse']:.3f} (128-px crop)  [{result['num_faces']} faces]")
    for name, scores in result.get("per_group", {}).items():
        print(f"  {name}: NME {100 * scores['nme']:.3f}%  FR@0.10 {100 * scores['fr']:.2f}%  "
              f"[{scores['num_faces']} faces]")
    print("  by region: " + "  ".join(f"{name} {100 * r['nme']:.2f}% ({100 * r['share']:.0f}% of the error)"
                                      for name, r in result["per_region"].items()))
    if "hard_view" in result:
        hard = result["hard_view"]
        print("hard view: " + "  ".join(f"{kind} {100 * s['nme']:.2f}%"
                                        for kind, s in hard["kinds"].items())
              + f"  | all {100 * hard['all']['nme']:.3f}%  FR@0.10 {100 * hard['all']['fr']:.2f}%")
    if args.metrics_out:
        write_metrics(result, args.metrics_out, model=source, record=args.val_record,
                      architecture=card["model"], quantized=bool(card.get("quantized")),
                      loss=card.get("loss"), flip_test=args.flip_test,
                      average_with=args.average_with,
                      # a QAT model's count includes its quantizers' ranges
                      params=None if args.export_dir else model.count_params(),
                      training=None if args.export_dir else
                      training_summary(checkpoint_dir, images_per_epoch(args)))


if __name__ == "__main__":
    main()
