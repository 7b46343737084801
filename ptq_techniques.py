"""Post-training quantization techniques of Nagel et al., "A White Paper on
Neural Network Quantization" (2021), on the float landmark model.

Each technique changes the Keras weights (never the graph); the result is
converted by the same TFLite integer-only conversion as `ptq_benchmark.py`
and scored on the test records:

- nearest          round-to-nearest, per-channel symmetric weights, min/max
                   activation ranges from --num_calibration crops
- per_tensor       the same with one weight scale per tensor
- calib_N          nearest with N calibration crops for the activation ranges
- cle              cross-layer equalization (+ bias absorption), BN folded first
- bias_correction  empirical bias correction of each layer's mean output error
- adaround         each layer's rounding learnt on calibration data
- cle+adaround+bias_correction   the paper's pipeline

at W8A8 (real int8 TFLite models: accuracy, latency, size) and W4A8. TFLite
has no 4-bit kernels, so W4A8 is simulated: every conv / dense kernel is put
on a 4-bit grid in TensorFlow (per output channel, or per tensor, symmetric,
integers -7..7 times the scale) and the model is then converted to the same
int8 TFLite model, whose kernels store those values on the int8 grid
(scale 7/127 of the 4-bit one, so at most 0.028 of a 4-bit step moves) and
whose activations are real int8.

    python ptq_techniques.py      # exported/ on tfrecords/ -> results/ptq_techniques.*
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

import keras_env  # noqa: F401  (must precede TensorFlow)
import numpy as np
import tensorflow as tf
from tqdm import tqdm

import dataset
import landmark
import network
import ptq_benchmark
from geometry import decode_scores
from tflite_model import TFLiteModel

keras = tf.keras
layers = keras.layers

BITS = {"W8A8": 8, "W4A8": 4}
TECHNIQUES = ("nearest", "per_tensor", "calib_10", "calib_100", "calib_1000", "cle",
              "bias_correction", "adaround", "cle+adaround+bias_correction", "qat")
# The converter's post-training quantization gives FULLY_CONNECTED weights
# one scale per output channel too (tfmot's QAT gives them one per tensor);
# tests/test_ptq_techniques.py checks the converter still does.
DENSE_PER_CHANNEL = True
# AdaRound's rectified sigmoid stretch and regulariser (AdaRound paper, §4).
ZETA, GAMMA = 1.1, -0.1
ADAROUND_LAMBDA = 0.01


# ------------------------------------------------ the model as quantization sees it --

class Unit:
    """A conv or dense layer with the bias that follows it: after BN folding
    a conv's bias lives in its (identity) batch norm's beta."""

    def __init__(self, layer, bn=None):
        self.layer, self.bn = layer, bn
        self.stats = None  # (mean, std) of the pre-activation, from the folded BN

    @property
    def name(self):
        return self.layer.name

    @property
    def kernel(self):
        return self.layer.kernel.numpy()

    @kernel.setter
    def kernel(self, value):
        self.layer.kernel.assign(value.astype(np.float32))

    @property
    def bias_variable(self):
        if self.bn is not None:
            return self.bn.beta
        return self.layer.bias if self.layer.use_bias else None

    @property
    def bias(self):
        return self.bias_variable.numpy()

    @bias.setter
    def bias(self, value):
        self.bias_variable.assign(value.astype(np.float32))

    @property
    def output(self):
        """The pre-activation output tensor (weights · input + bias)."""
        return self.bn.output if self.bn is not None else self.layer.output

    @property
    def per_channel_possible(self):
        return isinstance(self.layer, layers.Conv2D) or DENSE_PER_CHANNEL

    def apply(self, inputs, kernel):
        """The layer's product of `inputs` and `kernel`, without bias."""
        if isinstance(self.layer, layers.Conv2D):
            return tf.nn.conv2d(inputs, kernel, self.layer.strides, self.layer.padding.upper(),
                                dilations=self.layer.dilation_rate)
        return tf.matmul(inputs, kernel)


def consumers(layer):
    return [node.outbound_layer for node in layer._outbound_nodes]


def is_linear(layer):
    return getattr(layer, "activation", None) in (None, keras.activations.linear)


def find_units(model):
    """Every conv / dense layer of `model` as a Unit, in graph order."""
    units = []
    for layer in model.layers:
        if type(layer) not in (layers.Conv2D, layers.Dense):
            continue
        after = consumers(layer)
        bn = after[0] if (len(after) == 1 and isinstance(after[0], layers.BatchNormalization)
                          and is_linear(layer)) else None
        units.append(Unit(layer, bn))
    return units


def fold_batch_norm(model):
    """(copy of `model`, its units) with every conv -> BN pair folded: the
    kernel carries BN's scale, BN becomes y = x + bias (mean 0, variance
    1 - eps, gamma 1), so the function is unchanged and the TFLite converter
    folds exactly these kernels. Each unit's `stats` keep the pre-activation
    mean (beta) and std (|gamma|) that bias absorption needs."""
    folded = keras.models.clone_model(model)
    folded.set_weights(model.get_weights())
    units = find_units(folded)
    for unit in units:
        if unit.bn is None:
            continue
        bn = unit.bn
        gamma = bn.gamma.numpy() if bn.scale else np.ones(bn.moving_mean.shape, np.float32)
        beta = bn.beta.numpy()
        factor = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        bias = unit.layer.bias.numpy() if unit.layer.use_bias else 0.0
        unit.kernel = unit.kernel * factor
        unit.bias = beta + (bias - bn.moving_mean.numpy()) * factor
        if unit.layer.use_bias:
            unit.layer.bias.assign(np.zeros_like(bias))
        if bn.scale:
            bn.gamma.assign(np.ones_like(gamma))
        bn.moving_mean.assign(np.zeros_like(beta))
        bn.moving_variance.assign(np.full_like(beta, 1.0 - bn.epsilon))
        unit.stats = (beta.copy(), np.abs(gamma))
    return folded, units


def copy_model(folded, units):
    """An independent copy of a folded model and its units (stats kept)."""
    model = keras.models.clone_model(folded)
    model.set_weights(folded.get_weights())
    copies = find_units(model)
    for copy, unit in zip(copies, units):
        copy.stats = None if unit.stats is None else tuple(s.copy() for s in unit.stats)
    return model, copies


def outputs_of(model, tensors, images, batch_size=64):
    """Values of `tensors` (of `model`'s graph) on `images`, as numpy."""
    probe = keras.Model(model.input, tensors)
    values = probe.predict(images, batch_size=batch_size, verbose=0)
    return values if isinstance(tensors, list) else [values]


# --------------------------------------------------------------- weight grids --

def weight_scale(kernel, bits, per_channel):
    """Symmetric scale(s) putting the largest |weight| on the top integer:
    one per output channel (last axis) or one for the tensor."""
    qmax = 2 ** (bits - 1) - 1
    axes = tuple(range(kernel.ndim - 1)) if per_channel else None
    top = np.abs(kernel).max(axis=axes, keepdims=per_channel)
    return np.where(top > 0, top / qmax, 1.0).astype(np.float64)


def round_nearest(kernel, bits, per_channel):
    qmax = 2 ** (bits - 1) - 1
    scale = weight_scale(kernel, bits, per_channel)
    return scale * np.clip(np.round(kernel / scale), -qmax, qmax)


def quantize_units(units, bits, per_channel=True):
    """Put every unit's kernel on its `bits` grid by nearest rounding."""
    for unit in units:
        unit.kernel = round_nearest(unit.kernel, bits, per_channel and unit.per_channel_possible)


# ------------------------------------------------------ cross-layer equalization --

def equalization_pairs(units):
    """(first, second) units joined only by a ReLU (and maybe a Flatten):
    the pairs whose channels CLE may rescale, since relu(x / s) = relu(x) / s."""
    by_layer = {unit.layer.name: unit for unit in units}
    pairs = []
    for unit in units:
        node = unit.bn if unit.bn is not None else unit.layer
        if not is_linear(unit.layer) and unit.bn is None:
            continue
        chain = consumers(node)
        if len(chain) != 1 or not (type(chain[0]) is layers.ReLU and chain[0].max_value is None
                                   and not chain[0].negative_slope and not chain[0].threshold):
            continue
        chain = consumers(chain[0])
        if len(chain) == 1 and isinstance(chain[0], layers.Flatten):
            chain = consumers(chain[0])
        if len(chain) == 1 and chain[0].name in by_layer:
            pairs.append((unit, by_layer[chain[0].name]))
    return pairs


def _input_channel_view(second, channels):
    """The second unit's kernel as (..., channels, out): a Dense after a
    Flatten sees each channel once per spatial position."""
    kernel = second.kernel
    if isinstance(second.layer, layers.Dense):
        return kernel.reshape(-1, channels, kernel.shape[-1])
    return kernel


def channel_ranges(first, second):
    """(r1, r2): per channel between two units, the largest |weight| of the
    first unit's output channel and of the second unit's input channel."""
    channels = first.kernel.shape[-1]
    r1 = np.abs(first.kernel).reshape(-1, channels).max(axis=0)
    w2 = _input_channel_view(second, channels)
    r2 = np.abs(np.moveaxis(w2, -2, 0)).reshape(channels, -1).max(axis=1)
    return r1, r2


def equalize(units, absorb_bias=True, passes=20):
    """Cross-layer equalization in place (paper §4.1): for each pair, scale
    the first unit's output channel i by 1/s_i and the second's input
    channel i by s_i with s_i = sqrt(r1_i / r2_i), so both ranges become
    sqrt(r1_i r2_i). Repeated until the scales settle (chains share units).
    Then bias absorption (§4.1.1): c = max(0, mean - 3 std) of each first
    unit's pre-activation is moved into the second unit's bias (exact where
    the pre-activation stays above c, except at the second conv's zero
    padding). Returns (pairs, number of channels whose bias was absorbed)."""
    pairs, absorbed = equalization_pairs(units), 0
    for _ in range(passes):
        largest = 0.0
        for first, second in pairs:
            r1, r2 = channel_ranges(first, second)
            w1, w2 = first.kernel, _input_channel_view(second, len(r1))
            scale = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.maximum(r2, 1e-12)), 1.0)
            first.kernel = w1 / scale
            first.bias = first.bias / scale
            if first.stats is not None:
                first.stats = tuple(s / scale for s in first.stats)
            second.kernel = (w2 * scale[:, None]).reshape(second.kernel.shape)
            largest = max(largest, float(np.abs(np.log(scale)).max()))
        if largest < 1e-4:
            break
    if absorb_bias:
        for first, second in pairs:
            if first.stats is None or second.bias_variable is None:
                continue
            mean, std = first.stats
            shift = np.maximum(0.0, mean - 3 * std)
            first.bias = first.bias - shift
            first.stats = (mean - shift, std)
            w2 = _input_channel_view(second, len(shift))
            w2 = w2.reshape(-1, len(shift), w2.shape[-1])
            second.bias = second.bias + np.einsum("kio,i->o", w2, shift)
            absorbed += int((shift > 0).sum())
    return pairs, absorbed


# ------------------------------------------------------------ bias correction --

def correct_biases(float_model, float_units, quant_model, quant_units, images):
    """Empirical bias correction (paper §4.2): layer by layer, subtract from
    the quantized model's bias the mean (over calibration images and
    positions) of its output minus the float model's output, so each
    layer's mean output error on the calibration data becomes zero. Earlier
    corrections feed into later layers' inputs. Returns the mean |shift|."""
    targets = outputs_of(float_model, [u.output for u in float_units], images)
    shifts = []
    for unit, target in zip(tqdm(quant_units, desc="bias correction", leave=False), targets):
        if unit.bias_variable is None:
            continue
        got = outputs_of(quant_model, unit.output, images)[0]
        axes = tuple(range(got.ndim - 1))
        shift = got.mean(axis=axes) - target.mean(axis=axes)
        unit.bias = unit.bias - shift
        shifts.append(float(np.abs(shift).mean()))
    return float(np.mean(shifts)) if shifts else 0.0


# ------------------------------------------------------------------- AdaRound --

def rectified_sigmoid(v):
    return tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def adaround_kernel(unit, inputs, targets, bits, per_channel, iterations=1000, batch_size=32,
                    seed=0, learning_rate=1e-2, warmup=0.2):
    """AdaRound (Nagel et al. 2020) for one unit: learn, per weight, whether
    to round down or up so that unit.apply(inputs, kernel) best matches
    `targets` (the float layer's product on the float model's inputs).

    Minimises the output error summed over channels plus lambda times
    sum(1 - |2h - 1|^beta), with beta annealed from 20 to 2 after a warm-up
    without the regulariser. Returns the kernel on the grid: every weight
    floor or ceil of kernel / scale (one step of nearest at most); each
    channel's largest weight keeps its nearest value so the grid's scale,
    which the converter recomputes from the largest weight, is unchanged.
    """
    qmax = 2 ** (bits - 1) - 1
    kernel = unit.kernel.astype(np.float64)
    scale = weight_scale(kernel, bits, per_channel)
    floor = np.floor(kernel / scale)
    rest = np.clip(kernel / scale - floor, 0.0, 1.0)
    v = tf.Variable(-np.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0), dtype=tf.float32)
    floor_t, scale_t = tf.constant(floor, tf.float32), tf.constant(scale, tf.float32)
    optimizer = keras.optimizers.Adam(learning_rate)
    inputs_t, targets_t = tf.constant(inputs), tf.constant(targets)
    start = int(warmup * iterations)

    @tf.function
    def step(index, beta, weight):
        with tf.GradientTape() as tape:
            h = rectified_sigmoid(v)
            soft = scale_t * tf.clip_by_value(floor_t + h, -qmax, qmax)
            out = unit.apply(tf.gather(inputs_t, index), soft)
            error = tf.reduce_mean(tf.reduce_sum(tf.square(out - tf.gather(targets_t, index)), -1))
            regular = tf.reduce_sum(1.0 - tf.pow(tf.abs(2.0 * h - 1.0), beta))
            loss = error + weight * ADAROUND_LAMBDA * regular
        optimizer.apply_gradients([(tape.gradient(loss, v), v)])
        return error

    rng = np.random.default_rng(seed)
    for i in range(iterations):
        progress = max(0.0, (i - start) / max(1, iterations - start))
        beta = 2.0 + 0.5 * (20.0 - 2.0) * (1 + np.cos(np.pi * progress))
        step(tf.constant(rng.choice(len(inputs), min(batch_size, len(inputs)), replace=False)),
             tf.constant(beta, tf.float32), tf.constant(float(i >= start)))
    chosen = floor + (rectified_sigmoid(v).numpy() >= 0.5)
    nearest = np.round(kernel / scale)
    flat_kernel = np.abs(kernel).reshape(-1, kernel.shape[-1]) if per_channel else np.abs(kernel).reshape(-1, 1)
    top = flat_kernel.argmax(axis=0)
    chosen_flat = chosen.reshape(flat_kernel.shape)
    chosen_flat[top, np.arange(flat_kernel.shape[1])] = nearest.reshape(flat_kernel.shape)[
        top, np.arange(flat_kernel.shape[1])]
    return scale * np.clip(chosen_flat.reshape(kernel.shape), -qmax, qmax)


def adaround(float_model, float_units, quant_model, quant_units, images, bits, per_channel=True,
             iterations=1000, batch_size=32):
    """AdaRound every unit in graph order. Each unit learns from the inputs
    the partly rounded model gives it, against the float model's output
    (asymmetric reconstruction, AdaRound §4), so it also compensates the
    error of the units rounded before it."""
    for unit, reference in zip(tqdm(quant_units, desc="adaround", leave=False), float_units):
        inputs = outputs_of(quant_model, unit.layer.input, images)[0]
        float_inputs = outputs_of(float_model, reference.layer.input, images)[0]
        targets = reference.apply(tf.constant(float_inputs), reference.kernel).numpy()
        unit.kernel = adaround_kernel(unit, inputs, targets, bits,
                                      per_channel and unit.per_channel_possible,
                                      iterations, batch_size)


# ------------------------------------------------------------------ techniques --

def apply_technique(technique, folded, units, bits, calibration, iterations):
    """(model, per_channel, note) with `technique` applied to a copy of the
    folded float model, its kernels on the `bits` grid."""
    model, quant_units = copy_model(folded, units)
    per_channel = technique != "per_tensor"
    note = ""
    reference, reference_units = folded, units
    if technique.startswith("cle"):
        pairs, absorbed = equalize(quant_units)
        reference, reference_units = copy_model(model, quant_units)  # the equalized float model
        note = f"{len(pairs)} layer pairs equalized, {absorbed} channel biases absorbed"
    if "adaround" in technique:
        adaround(reference, reference_units, model, quant_units, calibration, bits,
                 per_channel, iterations)
    else:
        quantize_units(quant_units, bits, per_channel)
    if "bias_correction" in technique:
        shift = correct_biases(reference, reference_units, model, quant_units, calibration)
        note = "; ".join(filter(None, [note, f"mean absolute bias shift {shift:.4f}"]))
    return model, per_channel, note


def tflite_kernels(content):
    """Every conv / dense kernel of a TFLite model, dequantized, in Keras
    layout ((kh, kw, in, out) or (in, out)), with its scale(s)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    interpreter = Interpreter(model_content=content, experimental_op_resolver_type=
                              OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    kernels = []
    for op in interpreter._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "FULLY_CONNECTED"):
            continue
        detail = tensors[op["inputs"][1]]
        scales = detail["quantization_parameters"]["scales"]
        values = interpreter.get_tensor(detail["index"]).astype(np.float64)
        values *= scales.reshape((-1,) + (1,) * (values.ndim - 1))
        order = (1, 2, 3, 0) if values.ndim == 4 else (1, 0)
        kernels.append((np.transpose(values, order), scales))
    return kernels


def grid_error(content, units):
    """Largest distance, in int8 steps, between a kernel the converter
    stored and the Keras kernel it came from: 0 when a technique's weights
    reached the TFLite model exactly (W8), at most 0.5 for the 4-bit grid
    re-stored on the int8 one."""
    worst = 0.0
    for values, scales in tflite_kernels(content):
        candidates = [u.kernel for u in units if u.kernel.shape == values.shape]
        if not candidates:
            raise ValueError(f"TFLite kernel of shape {values.shape} matches no Keras layer")
        step = scales.reshape((1,) * (values.ndim - 1) + (-1,)) if len(scales) > 1 else scales[0]
        worst = max(worst, min(float(np.abs((values - k) / step).max()) for k in candidates))
    return worst


def to_tflite(model, card, per_channel, representative):
    """Integer-only TFLite model of a Keras model (via a temporary SavedModel)."""
    with tempfile.TemporaryDirectory() as tmp:
        landmark.export(model, card, Path(tmp) / "model")
        return ptq_benchmark.convert(Path(tmp) / "model", "int8_only", representative, per_channel)


def load_float_model(saved_model_dir):
    """(Keras model, card) of a float SavedModel exported by landmark.py: the
    network as exported, so an integral head's ends at its score maps."""
    card = landmark.load_saved_model(saved_model_dir)[1]
    if card.get("quantized"):
        raise ValueError(f"{saved_model_dir} is a QAT model; these techniques start from "
                         "the float model")
    model = network.scores_model(landmark.make_model(card))
    model.load_weights(str(Path(saved_model_dir) / "variables" / "variables")
                       ).assert_existing_objects_matched()
    return model, card


def keras_nme(model, test_record):
    return landmark.evaluate(lambda x: decode_scores(model(x, training=False).numpy()), test_record,
                             desc="float check")["nme"]


def qat_row(qat_model, test_record):
    """The reference for what training recovers: a QAT model fine-tuned with
    4-bit weights (landmark.py --quantization --weight_bits 4), scored as a
    SavedModel, i.e. with tfmot's fake quantization in TensorFlow."""
    predict, card = landmark.load_saved_model(qat_model)
    if not card.get("quantized") or card.get("weight_bits", 8) != 4:
        raise ValueError(f"{qat_model} is not a 4-bit-weight QAT export (landmark.py "
                         "--quantization --weight_bits 4, then --export_only)")
    result = landmark.evaluate(predict, test_record, desc="scoring QAT")
    return {"technique": "qat", "bits": "W4A8", "nme": result["nme"], "fr": result["fr"],
            "nmes": result["nmes"],
            "note": f"`{qat_model}`: tfmot n-bit scheme, fake-quantized in TensorFlow"}


def run(args):
    model, card = load_float_model(args.float_model)
    folded, units = fold_batch_norm(model)
    score = ptq_benchmark.label_scorer(args.test_record)
    float_nme = keras_nme(model, args.test_record)
    folded_nme = keras_nme(folded, args.test_record)
    print(f"float NME {100 * float_nme:.3f}%, after BN folding {100 * folded_nme:.3f}%")
    # The same crops ptq_benchmark.py calibrates with, so `nearest` at W8A8 is
    # its float int8_only conversion, up to the few weights whose rounding
    # flips between this BN folding and the converter's own.
    representative = ptq_benchmark.representative_images(args.rep_record, args.num_calibration)
    calibration = ptq_benchmark.representative_images(args.rep_record, args.num_optimize)
    sample = ptq_benchmark.representative_images(args.test_record, 1)[0]
    rows, timed, cle_float_nme = [], [], None
    jobs = [(t, b) for b in args.bits for t in args.techniques if t != "qat"]
    for technique, bits_name in tqdm(jobs, desc="techniques", unit="model"):
        tqdm.write(f"{technique} at {bits_name}")
        bits = BITS[bits_name]
        quant_model, per_channel, note = apply_technique(
            technique if not technique.startswith("calib_") else "nearest",
            folded, units, bits, calibration, args.adaround_iterations)
        rep = (ptq_benchmark.representative_images(args.rep_record, int(technique.split("_")[1]))
               if technique.startswith("calib_") else representative)
        content = to_tflite(quant_model, card, per_channel, rep)
        row = {"technique": technique, "bits": bits_name, "num_calibration": len(rep)}
        if bits_name == "W8A8":
            row.update(ptq_benchmark.measure(content, score))
            timed.append((row, content))
        else:
            row.update(score(TFLiteModel(content)))
        row["weights_off_grid_steps"] = grid_error(content, find_units(quant_model))
        if technique.startswith("cle"):
            if cle_float_nme is None:
                equalized, equalized_units = copy_model(folded, units)
                equalize(equalized_units)
                cle_float_nme = keras_nme(equalized, args.test_record)
            row["float_nme_after_transform"] = cle_float_nme
        row["note"] = note
        rows.append(row)
        tqdm.write(f"  NME {100 * row['nme']:.3f}%")
    ptq_benchmark.time_rows(timed, sample, args.runs)
    if "qat" in args.techniques and "W4A8" in args.bits:
        if Path(args.qat_w4_model).is_dir():
            rows.append(qat_row(args.qat_w4_model, args.test_record))
        else:
            print(f"no {args.qat_w4_model}: no QAT row (train it with landmark.py "
                  "--quantization --weight_bits 4)")
    return {"float_model": str(args.float_model), "test_record": args.test_record,
            "num_faces": dataset.record_info(args.test_record)[1], "float_nme": float_nme,
            "folded_nme": folded_nme, "num_calibration": args.num_calibration,
            "num_optimize": len(calibration), "adaround_iterations": args.adaround_iterations,
            "runs": args.runs, "timing": "in turn", "rows": rows}


def merge(previous, report):
    """`report`'s rows replace or join those of an earlier run on the same
    float model and test record (--update: re-run some techniques only)."""
    for key in ("float_model", "test_record", "num_calibration", "num_optimize",
                "adaround_iterations"):
        if previous.get(key) != report[key]:
            raise ValueError(f"--update: the earlier run's {key} was {previous.get(key)!r}, "
                             f"this run's is {report[key]!r}")
    done = {(r["technique"], r["bits"]) for r in report["rows"]}
    kept = [r for r in previous["rows"] if (r["technique"], r["bits"]) not in done]
    order = {key: i for i, key in enumerate((t, b) for b in BITS for t in TECHNIQUES)}
    rows = sorted(kept + report["rows"], key=lambda r: order[(r["technique"], r["bits"])])
    # Rows timed in different runs did not take turns with each other.
    if any(r.get("latency_ms_1thread_median") is not None for r in kept):
        report = {**report, "timing": "in turn within each merged run"}
    return {**report, "rows": rows}


# ---------------------------------------------------------------------- output --

def summary_lines(float_nme, rows):
    """What the table shows about the paper's pipeline, per bit-width."""
    find = {(r["technique"], r["bits"]): r["nme"] for r in rows}
    lines = []
    for bits in BITS:
        naive, best = find.get(("nearest", bits)), find.get(("cle+adaround+bias_correction", bits))
        if naive is None or best is None:
            continue
        lost = naive - float_nme
        recovered = (naive - best) / lost if lost > 0 else float("nan")
        lines.append(f"{bits}: nearest rounding loses {100 * lost:+.3f} NME points against float "
                     f"({100 * float_nme:.3f}%); the pipeline scores {100 * best:.3f}%, recovering "
                     f"{100 * recovered:.0f}% of that loss")
        qat = find.get(("qat", bits))
        if qat is not None and lost > 0:
            lines.append(f"{bits}: QAT (fine-tuned with these weights) scores {100 * qat:.3f}%, "
                         f"recovering {100 * (naive - qat) / lost:.0f}% of the loss")
    return lines


def markdown(report):
    lines = [f"Float model `{report['float_model']}`: NME {100 * report['float_nme']:.3f}% on "
             f"{report['num_faces']} test faces (`{report['test_record']}`). Activation ranges "
             f"from {report['num_calibration']} training crops unless the row says otherwise; "
             f"AdaRound and bias correction use {report['num_optimize']} training crops, "
             f"AdaRound {report['adaround_iterations']} iterations per layer. W8A8 latency: "
             f"median of {report['runs']} single-face invokes, 1 thread"
             f"{', the models taking turns' if report.get('timing') == 'in turn' else ''}.", "",
             "| technique | bits | NME % | Δ vs float | FR@0.10 % | 1-thread ms | size KB | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["rows"]:
        latency = r.get("latency_ms_1thread_median")
        size = r.get("size_kb")
        note = r["note"]
        if "float_nme_after_transform" in r:
            note = "; ".join(filter(None, [note, f"float NME after CLE "
                                                 f"{100 * r['float_nme_after_transform']:.3f}%"]))
        note = note.replace("|", "\\|")   # a bare pipe would split the table cell
        lines.append(f"| {r['technique']} | {r['bits']} | {100 * r['nme']:.3f} "
                     f"| {100 * (r['nme'] - report['float_nme']):+.3f} | {100 * r['fr']:.2f} "
                     f"| {'' if latency is None else f'{latency:.3f}'} "
                     f"| {'' if size is None else f'{size:.0f}'} | {note} |")
    lines.append("")
    if report["summary"]:
        lines += ["**What this run shows**", ""] + [f"- {s}" for s in report["summary"]] + [""]
    return "\n".join(lines)


def plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    techniques = list(dict.fromkeys(r["technique"] for r in report["rows"]))
    bits = list(dict.fromkeys(r["bits"] for r in report["rows"]))
    nme = {(r["technique"], r["bits"]): 100 * r["nme"] for r in report["rows"]}
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(bits)
    for i, b in enumerate(bits):
        xs = [t + i * width for t in range(len(techniques))]
        ax.bar(xs, [nme.get((t, b), np.nan) for t in techniques], width, label=b)
    ax.axhline(100 * report["float_nme"], color="k", linestyle="--", label="float")
    ax.set_xticks([t + width * (len(bits) - 1) / 2 for t in range(len(techniques))])
    ax.set_xticklabels(techniques, rotation=20, ha="right", fontsize=8)
    top = max(v for v in nme.values() if np.isfinite(v))
    ax.set_ylim(0.9 * 100 * report["float_nme"], 1.03 * top)   # the differences, not the bulk
    ax.set_ylabel("NME (%)")
    ax.set_title("Post-training quantization techniques (test faces)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report, out_dir, update=False):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [{k: v for k, v in r.items() if k != "nmes"} for r in report["rows"]]
    report = {**report, "rows": rows}
    if update and (out_dir / "ptq_techniques.json").is_file():
        report = merge(json.loads((out_dir / "ptq_techniques.json").read_text()), report)
    report["summary"] = summary_lines(report["float_nme"], report["rows"])
    plot(report, out_dir / "ptq_techniques.png")
    (out_dir / "ptq_techniques.md").write_text(markdown(report))
    (out_dir / "ptq_techniques.json").write_text(json.dumps(report, indent=1))
    print(markdown(report))
    print(f"wrote {out_dir}/ptq_techniques.md, ptq_techniques.json, ptq_techniques.png")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--float_model", default="exported")
    p.add_argument("--test_record", default="tfrecords/test.record")
    p.add_argument("--rep_record", default="tfrecords/train.record")
    p.add_argument("--num_calibration", type=int, default=200,
                   help="crops for the activation ranges (as ptq_benchmark.py)")
    p.add_argument("--num_optimize", type=int, default=1000,
                   help="crops AdaRound and bias correction learn from")
    p.add_argument("--adaround_iterations", type=int, default=1000)
    p.add_argument("--runs", type=int, default=200, help="timed invokes per latency")
    p.add_argument("--techniques", nargs="+", choices=TECHNIQUES, default=list(TECHNIQUES))
    p.add_argument("--bits", nargs="+", choices=list(BITS), default=list(BITS))
    p.add_argument("--qat_w4_model", default="exported_quantized_w4",
                   help="QAT export with 4-bit weights for the `qat` W4A8 row (skipped if absent)")
    p.add_argument("--out_dir", default="results")
    p.add_argument("--update", action="store_true",
                   help="keep the other rows of an earlier run's ptq_techniques.json")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    for record in (args.test_record, args.rep_record):
        if not Path(record).is_file():
            sys.exit(f"error: {record} not found (make data writes it)")
    try:
        report = run(args)
        write_report(report, args.out_dir, args.update)
    except (FileNotFoundError, ValueError, ptq_benchmark.ConversionError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
