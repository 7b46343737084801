"""Import first, before TensorFlow: tfmot needs Keras 2 (tf_keras).

Every entry point imports this module before anything that loads
TensorFlow; `tf.keras` then resolves to tf_keras.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
