"""Run a .tflite landmark model with the LiteRT interpreter.

Shared by the benchmark (accuracy, latency, dtype checks) and the predictor.
Integer-only models take and return int8: inputs are quantized and outputs
dequantized here with the tensors' own scale and zero point.
"""
import platform
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from geometry import cell_weights, decode_scores, score_spread

# Ops whose inputs are (activations, weights): the ones a mode must quantize.
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
# CPU flags of int8 dot-product instructions (x86 VNNI, ARM dot product).
# Without one, int8 kernels multiply-add at about the float32 rate.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "asimddp")


def cpu_info(cpuinfo="/proc/cpuinfo"):
    """The CPU that latencies were timed on: its model name and whether it
    has int8 dot-product instructions (None where /proc/cpuinfo is absent)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return {"model": platform.processor() or platform.machine(), "int8_dot_product": None}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {"model": fields.get("model name") or fields.get("CPU part") or platform.machine(),
            "int8_dot_product": bool(flags & set(INT8_DOT_FLAGS))}


def quantize(values, detail):
    """Float values -> the integer dtype of tensor `detail`."""
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(detail["dtype"])


def dequantize(values, detail):
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


class TFLiteModel:
    """A .tflite file (path) or flatbuffer (bytes) to predict with (latency_ms times it)."""

    def __init__(self, model, num_threads=1):
        if isinstance(model, (bytes, bytearray)):
            self.content = bytes(model)
        else:
            path = Path(model)
            if not path.is_file():
                raise FileNotFoundError(f"TFLite model not found: {path}")
            self.content = path.read_bytes()
        try:
            self.interpreter = Interpreter(model_content=self.content, num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except ValueError as err:
            raise ValueError(f"{model if not isinstance(model, bytes) else 'model'} "
                             f"is not a TFLite model: {err}") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        # An interpreter holds one set of tensors: two threads invoking it at
        # once raise, or silently read each other's outputs. Hold this lock
        # from set_tensor to the last get_tensor.
        self.lock = threading.Lock()
        # An integer input's value for each of the 256 pixel values: a uint8
        # image is quantized by lookup, with the same result as through float.
        self.pixel_table = (quantize(np.arange(256, dtype=np.float32), self.input)
                            if self.input["dtype"] != np.float32 else None)

    @property
    def input_size(self):
        return int(self.input["shape"][1])

    def _set_input(self, image):
        if image.dtype == np.uint8 and self.pixel_table is not None:
            data = cv2.LUT(np.ascontiguousarray(image), self.pixel_table)[None]
        else:
            data = image[None].astype(np.float32)
            if self.input["dtype"] != np.float32:
                data = quantize(data, self.input)
        self.interpreter.set_tensor(self.input["index"], data)

    def _raw_one(self, image):
        with self.lock:
            self._set_input(image)
            self.interpreter.invoke()
            out = self.interpreter.get_tensor(self.output["index"])   # a copy
        return dequantize(out, self.output) if out.dtype != np.float32 else out

    def _invoke_one(self, image):
        return decode_scores(self._raw_one(image))

    def predict(self, images):
        """(B, H, W, 3) pixels, float or uint8 -> (B, 2N) float marks (an
        integral head's score maps decoded)."""
        return np.concatenate([self._invoke_one(image) for image in images])

    def predict_with_spread(self, images):
        """(B, 2N) marks and (B, N) spread of each mark's score map in cells
        (geometry.score_spread; None for a model that outputs marks)."""
        return marks_and_spread(np.concatenate([self._raw_one(image) for image in images]))


def marks_and_spread(outputs):
    """A landmark model's raw outputs -> ((B, 2N) marks, (B, N) spread or None)."""
    outputs = np.asarray(outputs, np.float32)
    if outputs.ndim != 4:
        return decode_scores(outputs), None
    weights = cell_weights(outputs)           # one softmax for both: the predictor pays it every face
    return decode_scores(outputs, weights), score_spread(outputs, weights)


def latency_ms(models, image, runs=200, warmup=20):
    """[(median, 90th percentile)] in ms of `runs` single-face invokes of
    each TFLiteModel, after `warmup` untimed ones. Only invoke() is timed.
    The models take turns, one invoke each per round, so that drift on the
    machine (clock speed, other load) falls on all of them alike and their
    ratios are fair. (Timed one after the other, two files that differ only
    in their input and output types once measured 1.7x apart; README,
    "Timing: the models take turns".)"""
    for model in models:
        model._set_input(image)
        for _ in range(warmup):
            model.interpreter.invoke()
    times = np.zeros((runs, len(models)))
    for run in range(runs):
        for i, model in enumerate(models):
            start = time.perf_counter()
            model.interpreter.invoke()
            times[run, i] = time.perf_counter() - start
    return [(1000 * float(np.median(t)), 1000 * float(np.percentile(t, 90))) for t in times.T]


def weighted_op_dtypes(content):
    """[(op name, activation dtype, weight dtype, weight count)] of every
    conv / dense op.

    Read from the graph before any delegate rewrites it. A weight stored in
    float16 and expanded by a DEQUANTIZE op is reported as float16.
    """
    interpreter = Interpreter(model_content=content,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    produced_by = {out: op for op in ops for out in op["outputs"]}

    def stored_dtype(index):
        producer = produced_by.get(index)
        if producer is not None and producer["op_name"] == "DEQUANTIZE":
            return stored_dtype(producer["inputs"][0])
        return np.dtype(tensors[index]["dtype"]).name

    return [(op["op_name"], np.dtype(tensors[op["inputs"][0]]["dtype"]).name,
             stored_dtype(op["inputs"][1]), int(np.prod(tensors[op["inputs"][1]]["shape"])))
            for op in ops if op["op_name"] in WEIGHTED_OPS]
