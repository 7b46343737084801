"""Each PTQ technique does what the white paper says, on a toy network."""
import json

import numpy as np
import pytest
import tensorflow as tf

import generate_mesh_dataset as gen
import landmark
import ptq_techniques as pt

keras = tf.keras
layers = keras.layers


def toy_model(seed=0):
    """conv-BN-ReLU chains with a residual add and a flattened dense head,
    batch norms set to unequal per-channel scales (what CLE is for)."""
    tf.random.set_seed(seed)
    inputs = keras.Input((16, 16, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same",
                                                                use_bias=False)(inputs)))
    h = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same",
                                                                use_bias=False)(x)))
    h = layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same", use_bias=False)(h))
    x = layers.ReLU()(layers.Add()([x, h]))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(6, 1, strides=4,
                                                                use_bias=False)(x)))
    outputs = layers.Dense(10)(layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.choice([-1, 1], n) * np.exp(rng.uniform(-2, 2, n)))
            layer.beta.assign(rng.normal(0, 1, n))
            layer.moving_mean.assign(rng.normal(0, 0.5, n))
            layer.moving_variance.assign(np.exp(rng.uniform(-1, 1, n)))
    return model


@pytest.fixture(scope="module")
def toy():
    model = toy_model()
    images = np.random.default_rng(1).uniform(-1, 1, (64, 16, 16, 3)).astype(np.float32)
    return model, images


def _ranges(first, second):
    """channel_ranges, computed channel by channel as a cross-check."""
    channels = first.kernel.shape[-1]
    w2 = pt._input_channel_view(second, channels)
    r1 = [np.abs(first.kernel[..., i]).max() for i in range(channels)]
    r2 = [np.abs(w2[..., i, :]).max() for i in range(channels)]
    np.testing.assert_allclose(pt.channel_ranges(first, second), [r1, r2])
    return np.array(r1), np.array(r2)


def test_batch_norm_folding_keeps_the_function(toy):
    model, images = toy
    folded, units = pt.fold_batch_norm(model)
    np.testing.assert_allclose(folded.predict(images, verbose=0), model.predict(images, verbose=0),
                               rtol=1e-4, atol=1e-4)
    assert len(units) == 5 and sum(u.bn is not None for u in units) == 4


def test_cle_keeps_the_function_and_equalizes_ranges(toy):
    model, images = toy
    folded, units = pt.fold_batch_norm(model)
    equalized, eq_units = pt.copy_model(folded, units)
    before = {(a.name, b.name): _ranges(a, b) for a, b in pt.equalization_pairs(units)}
    pairs, _ = pt.equalize(eq_units, absorb_bias=False)
    # The stem feeds two layers and the residual conv feeds an add: only the
    # chain inside the block and the head (through Flatten) can be equalized.
    assert [(a.layer.__class__.__name__, b.layer.__class__.__name__) for a, b in pairs] == [
        ("Conv2D", "Conv2D"), ("Conv2D", "Dense")]
    np.testing.assert_allclose(equalized.predict(images, verbose=0),
                               folded.predict(images, verbose=0), rtol=1e-4, atol=1e-4)
    for first, second in pairs:
        r1, r2 = _ranges(first, second)
        np.testing.assert_allclose(r1, r2, rtol=1e-5)
        old1, old2 = before[(first.name, second.name)]
        # Per-channel ranges of the first layer's kernel are now as even as
        # sqrt(r1 r2) allows: the spread shrinks.
        assert r1.max() / r1.min() < old1.max() / old1.min()
        np.testing.assert_allclose(r1, np.sqrt(old1 * old2), rtol=1e-5)


def test_bias_absorption_moves_a_positive_floor_into_the_next_layer(toy):
    model, images = toy
    folded, units = pt.fold_batch_norm(model)
    head = units[3]                 # 1x1 conv -> ReLU -> Flatten -> dense: no padding
    lowest = pt.outputs_of(folded, head.output, images)[0].reshape(-1, 6).min(axis=0)
    head.bias = head.bias - lowest + 1.0   # its pre-activation now stays above 1
    floor = pt.outputs_of(folded, head.output, images)[0].reshape(-1, 6).min(axis=0)
    np.testing.assert_allclose(floor, 1.0, rtol=1e-4)
    for unit in units:
        unit.stats = None           # absorb only where the test knows the floor
    head.stats = (floor + 0.3, np.full(6, 0.1))       # mean - 3 std = the floor
    expected = folded.predict(images, verbose=0)
    pairs, absorbed = pt.equalize(units)
    assert absorbed == 6
    after = pt.outputs_of(folded, head.output, images)[0].reshape(-1, 6).min(axis=0)
    np.testing.assert_allclose(after, 0.0, atol=1e-4)  # the floor moved out of this layer
    np.testing.assert_allclose(folded.predict(images, verbose=0), expected, rtol=1e-4, atol=1e-4)


def test_bias_correction_zeroes_the_mean_output_error(toy):
    model, images = toy
    folded, units = pt.fold_batch_norm(model)
    quantized, q_units = pt.copy_model(folded, units)
    pt.quantize_units(q_units, bits=4)
    reference = pt.outputs_of(folded, [u.output for u in units], images)

    def mean_errors():
        got = pt.outputs_of(quantized, [u.output for u in q_units], images)
        return [np.abs((g - r).reshape(-1, g.shape[-1]).mean(axis=0)).max()
                for g, r in zip(got, reference)]

    before = mean_errors()
    pt.correct_biases(folded, units, quantized, q_units, images)
    after = mean_errors()
    assert max(before) > 1e-3
    for b, a in zip(before, after):
        assert a < 1e-4 + 1e-3 * b
    # Kernels are untouched: only biases move.
    for unit, q in zip(units, q_units):
        np.testing.assert_allclose(q.kernel, pt.round_nearest(unit.kernel, 4, q.per_channel_possible),
                                   rtol=1e-6)


def test_adaround_stays_within_a_step_and_beats_nearest(toy):
    model, images = toy
    folded, units = pt.fold_batch_norm(model)
    unit = units[1]
    inputs = pt.outputs_of(folded, unit.layer.input, images)[0]
    targets = unit.apply(tf.constant(inputs), unit.kernel).numpy()
    learnt = pt.adaround_kernel(unit, inputs, targets, bits=4, per_channel=True,
                                iterations=300, batch_size=16)
    nearest = pt.round_nearest(unit.kernel, 4, True)
    scale = pt.weight_scale(unit.kernel, 4, True)
    assert np.abs(learnt / scale - np.round(learnt / scale)).max() < 1e-6      # on the grid
    assert np.abs(learnt / scale - nearest / scale).max() <= 1 + 1e-6          # <= one step
    assert (np.abs(learnt) / scale).max() <= 7 + 1e-6
    np.testing.assert_allclose(np.abs(learnt).reshape(-1, 8).max(0),           # scale kept
                               np.abs(nearest).reshape(-1, 8).max(0), rtol=1e-6)

    def error(kernel):
        return float(np.mean((unit.apply(tf.constant(inputs), kernel).numpy() - targets) ** 2))
    assert error(learnt) < error(nearest)


def test_converter_stores_the_grid_weights_exactly(toy, tmp_path):
    model, images = toy
    folded, units = pt.fold_batch_norm(model)
    pt.quantize_units(units, bits=8)
    card = {"model": "toy", "num_marks": 5, "layout": "300w68", "input_size": 16}
    content = pt.to_tflite(folded, card, True, images[:8])
    dense_scales = [s for k, s in pt.tflite_kernels(content) if k.ndim == 2]
    # The constant the techniques rely on matches what the converter does.
    assert (len(dense_scales[0]) > 1) == pt.DENSE_PER_CHANNEL
    assert pt.grid_error(content, units) < 1e-3
    # Off-grid weights would be moved by the converter: the check sees it.
    units[1].kernel = units[1].kernel + 0.3 * pt.weight_scale(units[1].kernel, 8, True)
    assert pt.grid_error(pt.to_tflite(folded, card, True, images[:8]), units) > 0.25


def test_cli_writes_rows_for_each_technique_and_bit_width(tmp_path, monkeypatch, make_300w_folder):
    faces = make_300w_folder("faces", 6)
    gen.main(["--dataset", "300w", "--train_dirs", str(faces), "--test_dirs", str(faces),
              "--out_dir", str(tmp_path / "records")])
    model = landmark.make_model({"model": "resnet", "num_marks": 68, "input_size": 128,
                                 "options": {"head_channels": 8}})
    card = {"model": "resnet", "num_marks": 68, "layout": "300w68", "input_size": 128,
            "options": {"head_channels": 8}, "quantized": False}
    landmark.export(model, card, tmp_path / "float")
    out = tmp_path / "results"
    pt.main(["--float_model", str(tmp_path / "float"),
             "--test_record", str(tmp_path / "records" / "test.record"),
             "--rep_record", str(tmp_path / "records" / "train.record"),
             "--techniques", "nearest", "cle+adaround+bias_correction",
             "--num_calibration", "4", "--num_optimize", "4", "--adaround_iterations", "3",
             "--runs", "3", "--out_dir", str(out)])
    report = json.loads((out / "ptq_techniques.json").read_text())
    assert {(r["technique"], r["bits"]) for r in report["rows"]} == {
        (t, b) for t in ("nearest", "cle+adaround+bias_correction") for b in ("W8A8", "W4A8")}
    for row in report["rows"]:
        assert {"technique", "bits", "nme", "fr"} <= set(row)
        assert ("latency_ms_1thread_median" in row) == (row["bits"] == "W8A8")
        assert row["weights_off_grid_steps"] <= (1e-3 if row["bits"] == "W8A8" else 0.5 + 1e-3)
    assert "float_nme" in report
    assert (out / "ptq_techniques.png").stat().st_size > 0


def test_a_qat_or_missing_model_is_a_clear_error(tmp_path):
    (tmp_path / "r.record").write_bytes(b"")
    with pytest.raises(SystemExit, match="nothing is not a model exported"):
        pt.main(["--float_model", str(tmp_path / "nothing"), "--test_record",
                 str(tmp_path / "r.record"), "--rep_record", str(tmp_path / "r.record")])
    with pytest.raises(SystemExit, match="missing.record not found"):
        pt.main(["--test_record", str(tmp_path / "missing.record")])


def test_update_replaces_only_the_rerun_rows_of_the_same_setup():
    setup = {"float_model": "exported", "test_record": "t.record", "num_calibration": 200,
             "num_optimize": 1000, "adaround_iterations": 1000, "float_nme": 0.04}
    previous = {**setup, "rows": [{"technique": "nearest", "bits": "W4A8", "nme": 0.2},
                                  {"technique": "adaround", "bits": "W4A8", "nme": 0.1},
                                  {"technique": "nearest", "bits": "W8A8", "nme": 0.05}]}
    report = {**setup, "rows": [{"technique": "qat", "bits": "W4A8", "nme": 0.06},
                                {"technique": "adaround", "bits": "W4A8", "nme": 0.09}]}
    merged = pt.merge(previous, report)
    assert [(r["technique"], r["bits"], r["nme"]) for r in merged["rows"]] == [
        ("nearest", "W8A8", 0.05), ("nearest", "W4A8", 0.2), ("adaround", "W4A8", 0.09),
        ("qat", "W4A8", 0.06)]
    with pytest.raises(ValueError, match="num_optimize was 1000, this run's is 10"):
        pt.merge(previous, {**report, "num_optimize": 10})
    # Latencies from two runs did not take turns with each other.
    assert "timing" not in merged
    timed = {**previous, "rows": [{"technique": "nearest", "bits": "W8A8", "nme": 0.05,
                                   "latency_ms_1thread_median": 1.0}]}
    assert pt.merge(timed, {**report, "timing": "in turn"})["timing"] != "in turn"
