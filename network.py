"""The landmark networks. Each takes (B, 128, 128, 3) RGB pixels 0-255 and
returns (B, 2N): the marks' (x, y) in the crop divided by its size.

There is no normalisation layer inside: the first convolution's batch norm
absorbs the pixel scale, and every layer here is one tfmot can quantize,
so the quantized graph is int8 from input to output. (The integral head's
softmax and expectation are the exception: they have no weights and are
not exported; see _integral_tail and scores_model.)
"""
import keras_env  # noqa: F401  (must precede TensorFlow)
import tensorflow as tf

import geometry

keras = tf.keras
layers = keras.layers

# Marks are fractions of the crop, centred near 0.5. Starting every output
# at 0.5 (zero kernel) instead of at random values of size ~1 spares the
# first hundreds of steps spent undoing the random start (measured: stuck
# above the mean-shape error for 10 epochs, against 2 with this start).
def _marks_head(x, num_marks):
    return layers.Dense(num_marks * 2, name="marks", kernel_initializer="zeros",
                        bias_initializer=keras.initializers.Constant(0.5), dtype="float32")(x)


# A faster-moving batch-norm average: with ~35 steps an epoch, Keras' 0.99
# leaves the validation statistics lagging the weights for several epochs.
BN_MOMENTUM = 0.9


def _bn(x, name=None):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)(x)


def original_cnn(num_marks, input_size=128):
    """The original repo's CNN (yinguobing's cnn-facial-landmark)."""
    def conv(x, filters):
        return _bn(layers.Conv2D(filters, 3, padding="valid", activation="relu")(x))

    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.MaxPool2D(2, 2)(conv(inputs, 32))
    x = layers.MaxPool2D(2, 2)(conv(conv(x, 64), 64))
    x = layers.MaxPool2D(2, 2)(conv(conv(x, 64), 64))
    x = layers.MaxPool2D(2, 1)(conv(conv(x, 128), 128))
    x = conv(x, 256)
    x = layers.Flatten()(x)
    x = _bn(layers.Dense(1024, activation="relu")(x))
    outputs = _marks_head(x, num_marks)
    return keras.Model(inputs, outputs, name="cnn")


def _residual(x, filters, stride):
    """Two 3×3 conv-BN-ReLU with an identity (or strided 1×1) shortcut."""
    h = layers.ReLU()(_bn(layers.Conv2D(filters, 3, stride, padding="same", use_bias=False)(x)))
    h = _bn(layers.Conv2D(filters, 3, padding="same", use_bias=False)(h))
    if stride != 1 or x.shape[-1] != filters:
        x = _bn(layers.Conv2D(filters, 1, stride, use_bias=False)(x))
    return layers.ReLU()(layers.Add()([x, h]))


# (filters, blocks) per stage; each stage halves the map: 64 px -> 4 px.
RESNET_STAGES = ((32, 1), (64, 2), (96, 2), (128, 1))
# The stem: one strided 3x3 convolution of 16 filters (128 -> 64 px), and
# no residual block at 64 px (STEM_BLOCKS), as in every run up to v31.
STEM_FILTERS, STEM_BLOCKS = 16, 0


def resnet(num_marks, input_size=128, head_channels=64, stages=RESNET_STAGES, head="dense",
           integral_cells=None, stem=(STEM_FILTERS, STEM_BLOCKS)):
    """A small ResNet of plain 3×3 convolutions (BN, ReLU). Plain convs train
    about 3× faster than MobileNetV2's depthwise ones on these CPUs (110 vs
    40 images/s measured) and quantize as well. `stages` lists (filters,
    blocks) per stage, as RESNET_STAGES. `head` is how marks come out:
    'dense': a 1×1 conv squeezes the last map and every position feeds the
    dense output (position matters for landmarks; global pooling would throw
    it away); 'integral': see _integral_head, with `integral_cells` cells
    a side (default INTEGRAL_CELLS). `stem` is (filters, blocks): the width
    of the first, strided convolution and how many residual blocks of that
    width follow it at half the input's side, before the stages."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose from {sorted(HEADS)}")
    if integral_cells is not None and head != "integral":
        raise ValueError("integral_cells needs head='integral'")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    stem_filters, stem_blocks = stem
    x = layers.ReLU()(_bn(layers.Conv2D(stem_filters, 3, 2, padding="same",
                                        use_bias=False)(inputs)))
    for _ in range(stem_blocks):
        x = _residual(x, stem_filters, 1)
    maps = []
    for filters, repeats in stages:
        x = _residual(x, filters, 2)
        for _ in range(repeats - 1):
            x = _residual(x, filters, 1)
        maps.append(x)
    if head == "integral":
        outputs = _integral_head(maps, num_marks, head_channels,
                                 integral_cells or INTEGRAL_CELLS)
    else:
        x = layers.ReLU()(_bn(layers.Conv2D(head_channels, 1, use_bias=False)(x)))
        x = layers.Flatten()(x)
        outputs = _marks_head(x, num_marks)
    return keras.Model(inputs, outputs, name="resnet")


# The map the integral head's top-down path ends its 3×3 convolution on:
# 16×16 cells of 8 px at 128 px in. A finer score map (integral_cells=32)
# takes one more, cheap step: upsample, add a 1×1 lateral from the 32×32
# map, ReLU (a 3×3 convolution at 32×32 would cost half the network again).
INTEGRAL_CELLS = 16


def _integral_head(maps, num_marks, channels, cells=INTEGRAL_CELLS):
    """Integral regression (Sun et al. 2018): a top-down path brings the
    coarse maps up to `cells`² cells, one score map per mark goes through a
    softmax over the cells, and the mark is the expected cell centre under
    it, so the output is still (x, y) fractions of the crop."""
    sides = [m.shape[1] for m in maps]
    if INTEGRAL_CELLS not in sides or cells not in sides or cells < INTEGRAL_CELLS:
        raise ValueError(f"the integral head needs the {INTEGRAL_CELLS}×{INTEGRAL_CELLS} map and "
                         f"a {cells}×{cells} one (at least {INTEGRAL_CELLS}); "
                         f"the stages give {sides}")
    coarse = [m for m in maps if m.shape[1] <= INTEGRAL_CELLS]
    x = _bn(layers.Conv2D(channels, 1, use_bias=False)(coarse[-1]))
    for lateral in reversed(coarse[:-1]):
        x = layers.UpSampling2D(2)(x)
        x = layers.Add()([x, _bn(layers.Conv2D(channels, 1, use_bias=False)(lateral))])
    x = layers.ReLU()(_bn(layers.Conv2D(channels, 3, padding="same", use_bias=False)(x)))
    # The last map of each finer side, coarsest first, down to `cells`.
    finer = {m.shape[1]: m for m in maps if INTEGRAL_CELLS < m.shape[1] <= cells}
    for side in sorted(finer):
        x = layers.UpSampling2D(2)(x)
        x = layers.ReLU()(layers.Add()([x, _bn(layers.Conv2D(channels, 1, use_bias=False)(
            finer[side]))]))
    # Score maps and the tail stay float32 under a mixed precision policy:
    # the softmax over 1,024 cells and the losses need float32's mantissa.
    scores = layers.Conv2D(num_marks, 1, kernel_initializer="zeros", name=SCORES_LAYER,
                           dtype="float32")(x)
    return _integral_tail(scores, num_marks)


def _integral_tail(scores, num_marks):
    """Score maps (B, h, h, N) -> (B, 2N) expected positions. Its layers
    (INTEGRAL_TAIL) stay float under QAT and out of the .tflite: an int8
    softmax rounds the small weights to 0, pulling each mark towards the
    crop's corner by the mass lost. geometry.decode_scores is its NumPy twin."""
    cells = scores.shape[1] * scores.shape[2]
    weights = layers.Softmax(axis=1, name="cell_weights", dtype="float32")(
        layers.Reshape((cells, num_marks), name="cells", dtype="float32")(scores))
    xy = layers.Dense(2, use_bias=False, trainable=False, name="expected_position",
                      dtype="float32", kernel_initializer=keras.initializers.Constant(
                          geometry.cell_centres(scores.shape[1])))(
        layers.Permute((2, 1), name="per_mark", dtype="float32")(weights))
    return layers.Reshape((num_marks * 2,), name="marks", dtype="float32")(xy)


SCORES_LAYER = "mark_scores"
INTEGRAL_TAIL = ("cells", "cell_weights", "per_mark", "expected_position", "marks")


def scores_model(model):
    """What gets exported and converted: an integral-head model cut at its
    score maps (the float tail is geometry.decode_scores' job); others unchanged.
    Works on QAT-wrapped models too (tfmot prefixes 'quant_')."""
    for layer in model.layers:
        if layer.name in (SCORES_LAYER, "quant_" + SCORES_LAYER):
            return keras.Model(model.input, layer.output, name=model.name + "_scores")
    return model


HEADS = ("dense", "integral")


MODELS = {"cnn": original_cnn, "resnet": resnet}


def build_model(name, num_marks, input_size=128, **options):
    """The network `name`; options (e.g. head_channels) go to its builder."""
    if name not in MODELS:
        raise ValueError(f"unknown --model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name](num_marks, input_size, **options)


def parse_stem(text):
    """'32x1' -> (32, 1): the stem's filters and its residual blocks (0 or more)."""
    try:
        filters, blocks = (int(n) for n in text.split("x"))
    except ValueError:
        filters, blocks = 0, -1
    if filters < 1 or blocks < 0:
        raise ValueError(f"--stem {text!r}: expected FILTERSxBLOCKS, e.g. "
                         f"{STEM_FILTERS}x{STEM_BLOCKS} (filters >= 1, blocks >= 0)")
    return filters, blocks


def parse_stages(text):
    """'32x1,64x2,96x3,128x1' -> ((32, 1), (64, 2), (96, 3), (128, 1))."""
    try:
        stages = tuple(tuple(int(n) for n in part.split("x")) for part in text.split(","))
    except ValueError:
        stages = ()
    if not stages or any(len(s) != 2 or min(s) < 1 for s in stages):
        raise ValueError(f"--stages {text!r}: expected FILTERSxBLOCKS,... e.g. "
                         + ",".join(f"{f}x{b}" for f, b in RESNET_STAGES))
    return stages
