"""The benchmark's conversions and checks on a tiny model (no training)."""
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import generate_mesh_dataset as gen
import landmark
import ptq_benchmark as pb
from tflite_model import TFLiteModel, cpu_info, dequantize, latency_ms, quantize

keras = tf.keras


def tiny_model(num_marks=68):
    layers = keras.layers
    inputs = keras.Input((128, 128, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, 4, use_bias=False)(inputs)))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, 4, use_bias=False)(x)))
    x = layers.Conv2D(8, 1, activation="relu")(x)
    outputs = layers.Dense(num_marks * 2)(layers.Flatten()(x))
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tf.random.set_seed(0)
    model = tiny_model()
    card = {"model": "tiny", "num_marks": 68, "layout": "300w68", "input_size": 128}
    landmark.export(model, card, root / "float")
    rng = np.random.default_rng(0)
    representative = rng.uniform(0, 255, (16, 128, 128, 3)).astype(np.float32)
    import tensorflow_model_optimization as tfmot
    qat = tfmot.quantization.keras.quantize_model(model)
    for _ in range(3):  # QAT learns its ranges in training mode; let them settle
        qat(representative, training=True)
    landmark.export(qat, {**card, "quantized": True}, root / "qat")
    return root, representative


@pytest.mark.parametrize("mode", pb.MODES)
def test_float_model_converts_in_every_mode_as_promised(models, mode):
    root, representative = models
    content = pb.convert(root / "float", mode, representative)
    ok, note = pb.check_dtypes(content, mode)
    assert ok, note
    float_content = pb.convert(root / "float", "float32", representative)
    expected = TFLiteModel(float_content).predict(representative[:4])
    got = TFLiteModel(content).predict(representative[:4])
    # Quantized outputs stay within a few per cent of the output range.
    assert np.abs(got - expected).max() < 0.05 * np.ptp(expected) + 1e-6


def test_qat_16x8_is_not_supported_with_the_converters_reason(models):
    root, representative = models
    with pytest.raises(pb.ConversionError, match="16x8"):
        pb.convert(root / "qat", "16x8", representative)


def test_dtype_check_flags_a_mode_that_did_not_apply(models):
    root, representative = models
    # float16 on a QAT graph silently gives the int8 model: it must be flagged.
    ok, note = pb.check_dtypes(pb.convert(root / "qat", "float16", representative), "float16")
    assert not ok and "float16" in note
    # A float model passed off as integer-only is flagged too.
    ok, note = pb.check_dtypes(pb.convert(root / "float", "float32", representative), "int8_only")
    assert not ok and "int8" in note


def test_int8_only_takes_and_returns_int8_with_a_correct_round_trip(models):
    root, representative = models
    model = TFLiteModel(pb.convert(root / "qat", "int8_only", representative))
    assert model.input["dtype"] == np.int8 and model.output["dtype"] == np.int8
    scale, zero_point = model.input["quantization"]
    values = np.array([0.0, 1.0, 127.5, 254.0, 255.0], np.float32)
    back = dequantize(quantize(values, model.input), model.input)
    assert np.abs(back - values).max() <= scale / 2 + 1e-6
    raw = quantize(representative[:1], model.input)
    model.interpreter.set_tensor(model.input["index"], raw)
    model.interpreter.invoke()
    manual = dequantize(model.interpreter.get_tensor(model.output["index"]), model.output)
    np.testing.assert_allclose(model.predict(representative[:1]), manual)


def test_benchmark_writes_every_row_and_file(models, tmp_path, make_300w_folder):
    root, _ = models
    faces = make_300w_folder("faces", 6)
    gen.main(["--dataset", "300w", "--train_dirs", str(faces), "--test_dirs", str(faces),
              "--out_dir", str(tmp_path / "records")])
    out = tmp_path / "results"
    pb.main(["--float_model", str(root / "float"), "--qat_model", str(root / "qat"),
             "--test_record", str(tmp_path / "records" / "test.record"),
             "--rep_record", str(tmp_path / "records" / "train.record"),
             "--num_calibration", "4", "--runs", "5", "--out_dir", str(out)])
    report = json.loads((out / "ptq_benchmark.json").read_text())
    modes = {(r["model"], r["mode"]) for r in report["rows"]}
    assert modes == {(m, mode) for m in ("float", "qat") for mode in pb.MODES} | {
        ("float", "int8_selective")}
    for row in report["rows"]:
        assert {"nme", "fr", "auc", "mse", "latency_ms_1thread_median", "latency_ms_1thread_p90",
                "latency_ms_allthreads_median", "size_kb", "dtype_check_ok", "note"} <= set(row)
        assert row["nme"] is not None or row["note"].startswith("not supported")
    assert (out / "ced.png").stat().st_size > 0
    assert "| int8_only |" in (out / "ptq_benchmark.md").read_text()
    assert set(report["cpu"]) == {"model", "int8_dot_product"}
    assert report["timing"] == "in turn"
    assert "the models taking turns" in (out / "ptq_benchmark.md").read_text()


def test_a_path_that_is_not_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="nothing is not a model exported"):
        pb.main(["--float_model", str(tmp_path / "nothing")])
    with pytest.raises(FileNotFoundError, match="TFLite model not found"):
        TFLiteModel(tmp_path / "missing.tflite")
    (tmp_path / "junk.tflite").write_bytes(b"junk" * 10)
    with pytest.raises(ValueError, match="junk.tflite is not a TFLite model"):
        TFLiteModel(tmp_path / "junk.tflite")


def test_label_free_mode_scores_against_the_float_model(models, tmp_path, monkeypatch):
    root, _ = models
    out = tmp_path / "results"
    images = Path(__file__).resolve().parents[1] / "test_images"
    monkeypatch.chdir(tmp_path)          # no tfrecords/ here: the defaults fall back
    pb.main(["--float_model", str(root / "float"), "--qat_model", str(root / "qat"),
             "--images", str(images),
             "--modes", "float32", "int8_only", "--num_calibration", "6", "--runs", "3",
             "--out_dir", str(out)])
    report = json.loads((out / "ptq_benchmark.json").read_text())
    assert report["scoring"].startswith("label-free")
    assert report["num_faces"] == 2 and report["num_calibration"] == 6
    float32 = next(r for r in report["rows"] if (r["model"], r["mode"]) == ("float", "float32"))
    assert float32["nme"] == pytest.approx(0.0, abs=1e-6)     # the reference agrees with itself
    assert "label-free" in (out / "ptq_benchmark.md").read_text()


def test_cpu_info_reads_the_model_and_int8_dot_product_flags(tmp_path):
    block = "processor\t: {n}\nmodel name\t: Test CPU @ 2.80GHz\nflags\t\t: fpu avx2 fma{extra}\n\n"
    without = tmp_path / "avx2"
    without.write_text(block.format(n=0, extra="") + block.format(n=1, extra=""))
    assert cpu_info(without) == {"model": "Test CPU @ 2.80GHz", "int8_dot_product": False}
    vnni = tmp_path / "vnni"
    vnni.write_text(block.format(n=0, extra=" avx512f avx512_vnni"))
    assert cpu_info(vnni)["int8_dot_product"] is True
    assert cpu_info(tmp_path / "absent")["int8_dot_product"] is None


def test_models_are_timed_taking_turns(models):
    """One invoke of each model per round, after each one's warm-ups: timed
    block by block, the machine's drift would pick the winner."""
    root, representative = models
    calls = []

    class Spy:
        """The interpreter, noting whose invoke() ran."""
        def __init__(self, interpreter, name):
            self.interpreter, self.name = interpreter, name

        def invoke(self):
            calls.append(self.name)
            self.interpreter.invoke()

        def __getattr__(self, attribute):
            return getattr(self.interpreter, attribute)

    content = pb.convert(root / "float", "float32", representative)
    timed = [TFLiteModel(content) for _ in "abc"]
    for model, name in zip(timed, "abc"):
        model.interpreter = Spy(model.interpreter, name)
    result = latency_ms(timed, representative[0], runs=4, warmup=2)
    assert calls == list("aabbcc") + list("abc") * 4
    assert len(result) == 3 and all(0 < median <= p90 for median, p90 in result)


def test_an_out_dir_that_is_a_file_is_named_before_any_conversion(models, tmp_path, capsys):
    root, _ = models
    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit):
        pb.main(["--float_model", str(root / "float"), "--qat_model", str(root / "qat"),
                 "--out_dir", str(tmp_path / "afile")])
    assert f"--out_dir {tmp_path / 'afile'}: is a file, not a folder" in capsys.readouterr().err


def test_a_record_named_but_missing_or_of_the_other_layout_is_an_error(models, tmp_path,
                                                                        make_wflw_tree):
    root, _ = models
    base = ["--float_model", str(root / "float"), "--qat_model", str(root / "qat")]
    with pytest.raises(SystemExit):
        pb.main(base + ["--test_record", str(tmp_path / "tset.record")])
    import generate_mesh_dataset as gen
    gen.main(["--data_dir", str(make_wflw_tree(train=4, test=2)), "--out_dir",
              str(tmp_path / "wflw")])
    with pytest.raises(SystemExit, match="the model marks 300w68 .* holds wflw98 faces"):
        pb.main(base + ["--test_record", str(tmp_path / "wflw" / "test.record"),
                        "--rep_record", str(tmp_path / "wflw" / "train.record")])
