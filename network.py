"""The landmark networks. Each takes (B, 128, 128, 3) RGB pixels 0-255 and
returns (B, 2N): the marks' (x, y) in the crop divided by its size.

There is no normalisation layer inside: the first convolution's batch norm
absorbs the pixel scale, and every layer here is one tfmot can quantize,
so the quantized graph is int8 from input to output.
"""
import keras_env  # noqa: F401  (must precede TensorFlow)
import tensorflow as tf

keras = tf.keras
layers = keras.layers

# Marks are fractions of the crop, centred near 0.5. Starting every output
# at 0.5 (zero kernel) instead of at random values of size ~1 spares the
# first hundreds of steps spent undoing the random start (measured: stuck
# above the mean-shape error for 10 epochs, against 2 with this start).
def _marks_head(x, num_marks):
    return layers.Dense(num_marks * 2, name="marks", kernel_initializer="zeros",
                        bias_initializer=keras.initializers.Constant(0.5))(x)


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


def resnet(num_marks, input_size=128, head_channels=64, stages=RESNET_STAGES):
    """A small ResNet of plain 3×3 convolutions (BN, ReLU). Plain convs train
    about 3× faster than MobileNetV2's depthwise ones on these CPUs (110 vs
    40 images/s measured) and quantize as well. A 1×1 conv squeezes the
    4×4 map and every position feeds the dense output (position matters for
    landmarks; global pooling would throw it away). `stages` lists
    (filters, blocks) per stage, as RESNET_STAGES."""
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.ReLU()(_bn(layers.Conv2D(16, 3, 2, padding="same", use_bias=False)(inputs)))
    for filters, repeats in stages:
        x = _residual(x, filters, 2)
        for _ in range(repeats - 1):
            x = _residual(x, filters, 1)
    x = layers.ReLU()(_bn(layers.Conv2D(head_channels, 1, use_bias=False)(x)))
    x = layers.Flatten()(x)
    outputs = _marks_head(x, num_marks)
    return keras.Model(inputs, outputs, name="resnet")


MODELS = {"cnn": original_cnn, "resnet": resnet}


def build_model(name, num_marks, input_size=128, **options):
    """The network `name`; options (e.g. head_channels) go to its builder."""
    if name not in MODELS:
        raise ValueError(f"unknown --model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name](num_marks, input_size, **options)


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
