"""End to end on tiny generated datasets, in each format: convert -> train
one epoch -> evaluate -> export -> reload -> same outputs."""
import json
from pathlib import Path

import numpy as np
import pytest

import dataset
import generate_mesh_dataset as gen
import callbacks
import landmark
import layouts
import losses
import network


def _train_eval_export(tmp_path, monkeypatch, records, layout, model_flags=()):
    monkeypatch.chdir(tmp_path)
    common = ["--train_record", str(records / "train.record"),
              "--val_record", str(records / "test.record")]
    landmark.main(common + ["--epochs", "1", "--batch_size", "4",
                            "--metrics_out", "train_metrics.json", *model_flags])
    card = json.loads((tmp_path / "checkpoints" / "model.json").read_text())
    assert card["layout"] == layout and card["model"] == "resnet"
    assert (tmp_path / "checkpoints" / "best.weights.h5").is_file()
    assert any((tmp_path / "logs").rglob("events.out.tfevents.*"))

    landmark.main(common + ["--eval_only", "--metrics_out", "eval.json"])
    result = json.loads((tmp_path / "eval.json").read_text())
    assert {"nme", "fr", "auc", "mse"} <= set(result)
    assert result["num_faces"] == len(result["nmes"]) > 0
    # The regions' shares add up to the whole error, and their NMEs weighted by
    # their mark counts give the faces' NME.
    regions = dict(layouts.get_layout(layout).regions)
    assert set(result["per_region"]) == set(regions)
    assert sum(r["share"] for r in result["per_region"].values()) == pytest.approx(1)
    assert sum(r["nme"] * len(regions[name]) for name, r in result["per_region"].items()) \
        / card["num_marks"] == pytest.approx(result["nme"], rel=1e-6)

    landmark.main(["--export_only=True"])
    predict, exported_card = landmark.load_saved_model(tmp_path / "exported")
    assert exported_card["num_marks"] == card["num_marks"]
    model, _ = landmark.load_checkpoint("checkpoints")
    assert result["params"] == model.count_params() > 0
    images = next(iter(dataset.eval_dataset(records / "test.record", 8)))[0].numpy()
    np.testing.assert_allclose(predict(images), model(images, training=False).numpy(),
                               atol=1e-5)
    # Evaluating the export gives the checkpoint's numbers.
    landmark.main(common + ["--eval_only", "--export_dir", "exported",
                            "--metrics_out", "eval_export.json"])
    exported = json.loads((tmp_path / "eval_export.json").read_text())
    assert exported["nme"] == pytest.approx(result["nme"], rel=1e-4)
    return result


def test_end_to_end_300w(tmp_path, monkeypatch, make_300w_folder):
    train, test = make_300w_folder("train", 10), make_300w_folder("test", 4, seed=1)
    gen.main(["--dataset", "300w", "--train_dirs", str(train), "--test_dirs", str(test),
              "--out_dir", str(tmp_path / "records")])
    result = _train_eval_export(tmp_path, monkeypatch, tmp_path / "records", "300w68")
    assert "per_attribute_nme" not in result

    # Quantization-aware fine-tuning from that checkpoint, then its export.
    records = ["--train_record", str(tmp_path / "records" / "train.record"),
               "--val_record", str(tmp_path / "records" / "test.record")]
    landmark.main(records + ["--quantization=True", "--epochs", "1", "--batch_size", "4"])
    assert (tmp_path / "quantized_checkpoints" / "best.weights.h5").is_file()
    landmark.main(["--export_only", "--quantization"])
    predict, card = landmark.load_saved_model(tmp_path / "exported_quantized")
    assert card["quantized"] is True

    import ptq_benchmark
    from tflite_model import TFLiteModel
    images = next(iter(dataset.eval_dataset(tmp_path / "records" / "test.record", 8)))[0].numpy()
    int8 = TFLiteModel(ptq_benchmark.convert(tmp_path / "exported_quantized", "int8_only", images))
    # Calibrated QAT ranges: pixels in with scale 1, and an output step far
    # finer than tfmot's ±6 starting range would give (12/255).
    assert int8.input["quantization"] == (1.0, -128)
    assert int8.output["quantization"][0] < 0.02
    ok, note = ptq_benchmark.check_dtypes(int8.content, "int8_only")
    assert ok, note
    np.testing.assert_allclose(int8.predict(images), predict(images), atol=0.05)

    # --average_with: a model averaged with itself scores as itself; a model
    # of another layout is refused by name.
    landmark.main(records + ["--eval_only", "--export_dir", "exported", "--metrics_out", "one.json"])
    landmark.main(records + ["--eval_only", "--export_dir", "exported", "--average_with", "exported",
                             "--metrics_out", "avg.json"])
    one, avg = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "avg.json"))
    assert avg["nme"] == pytest.approx(one["nme"], rel=1e-6) and avg["average_with"] == ["exported"]
    import shutil
    shutil.copytree(tmp_path / "exported", tmp_path / "other")
    card_path = tmp_path / "other" / landmark.MODEL_CARD
    card_path.write_text(json.dumps({**json.loads(card_path.read_text()), "layout": "wflw98"}))
    with pytest.raises(SystemExit, match="--average_with other: its layout is 'wflw98'"):
        landmark.main(records + ["--eval_only", "--export_dir", "exported", "--average_with", "other"])

    import map_spread   # measures score maps only
    with pytest.raises(SystemExit, match="exported outputs marks, not score maps"):
        map_spread.main(["exported", "--record", records[-1]])


def test_end_to_end_wflw(tmp_path, monkeypatch, make_wflw_tree):
    root = make_wflw_tree(train=10, test=4)
    gen.main(["--data_dir", str(root), "--out_dir", str(tmp_path / "records")])
    # A custom stem and stage list travel in the card: export and reload rebuild them.
    result = _train_eval_export(tmp_path, monkeypatch, tmp_path / "records", "wflw98",
                                ["--stages", "8x1,16x2", "--head_channels", "8", "--stem", "4x1"])
    assert set(result["per_attribute_nme"]) == set(layouts.WFLW_ATTRIBUTES)
    card = json.loads((tmp_path / "checkpoints" / "model.json").read_text())
    assert card["options"] == {"head_channels": 8, "stages": [[8, 1], [16, 2]], "stem": [4, 1]}
    model, _ = landmark.load_checkpoint("checkpoints")
    assert model.layers[1].filters == 4
    # stem and two stages each halve the map: 128 / 8 = 16 px, 8 channels
    assert model.layers[-1].input.shape[-1] == 16 * 16 * 8


@pytest.mark.parametrize("text", ["", "32", "32x", "32x0", "axb", "32x1,"])
def test_bad_stages_flag_is_named(text, capsys):
    with pytest.raises(SystemExit):
        landmark.parse_args(["--stages", text])
    assert "--stages" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["", "32", "0x1", "32x-1", "32x1,64x1"])
def test_bad_stem_flag_is_named(text, capsys):
    with pytest.raises(SystemExit):
        landmark.parse_args(["--stem", text])
    assert "--stem" in capsys.readouterr().err


@pytest.mark.parametrize("flags, name", [(["--occlusion", "1.5"], "--occlusion"),
                                         (["--occlusion=-0.1"], "--occlusion"),
                                         (["--weight_decay=-1"], "--weight_decay"),
                                         (["--weight_average", "1"], "--weight_average"),
                                         (["--integral_cells", "24"], "--integral_cells"),
                                         (["--calm_epochs=-1"], "--calm_epochs"),
                                         (["--integral_cells", "32"], "--integral_cells"),
                                         (["--initial_epoch", "11"], "--initial_epoch"),
                                         (["--initial_epoch=-1"], "--initial_epoch"),
                                         (["--heatmap_loss=-1"], "--heatmap_loss"),
                                         (["--heatmap_loss", "1"], "--heatmap_loss"),
                                         (["--heatmap_sigma", "0"], "--heatmap_sigma")])
def test_bad_regulariser_flags_are_named(flags, name, capsys):
    with pytest.raises(SystemExit):
        landmark.parse_args(flags)
    assert name in capsys.readouterr().err


def test_cell_targets_are_gaussians_around_the_marks():
    side, sigma = 16, 1.5
    targets = np.array([[0.25, 0.75, 0.5, 0.5]], np.float32)   # two marks
    cells = losses.cell_targets(targets, side, sigma).numpy()  # (1, 2, 256)
    np.testing.assert_allclose(cells.sum(axis=-1), 1.0, atol=1e-5)
    centres = landmark.geometry.cell_centres(side)
    for mark, (x, y) in enumerate(targets.reshape(2, 2)):
        weights = cells[0, mark]
        mean = weights @ centres
        # Cut off at the map's edges: a mark 4 cells from them moves by 1/60 cell.
        np.testing.assert_allclose(mean, (x, y), atol=1.5e-3)
        spread = np.sqrt(weights @ ((centres - mean) ** 2)) * side   # in cells
        np.testing.assert_allclose(spread, sigma, rtol=0.05)


def test_js_divergence_by_hand():
    p = np.array([[[0.5, 0.5, 0.0]]])   # (1 face, 1 mark, 3 cells)
    q = np.array([[[0.0, 0.5, 0.5]]])
    # m = (.25, .5, .25): KL(p||m) = .5 ln 2 + .5 ln 1 = .5 ln 2, likewise KL(q||m).
    np.testing.assert_allclose(losses.js_divergence(p, q).numpy(), [[0.5 * np.log(2)]],
                               rtol=1e-5)
    np.testing.assert_allclose(losses.js_divergence(p, p).numpy(), [[0.0]], atol=1e-6)


def test_heatmap_regulariser_adds_its_weighted_divergence():
    model = network.build_model("resnet", 68, head="integral", stages=((8, 1), (8, 1), (16, 1)),
                                head_channels=8, integral_cells=32)
    layout = landmark.get_layout("300w68")
    plain, nme = losses.make_loss("wing", layout), losses.nme_metric(layout)
    regularised = losses.HeatmapRegularised(model, 3.0, 1.0, plain, nme)
    regularised.compile(optimizer="sgd")
    images = np.random.default_rng(0).uniform(0, 255, (4, 128, 128, 3)).astype(np.float32)
    targets = np.random.default_rng(1).uniform(0.2, 0.8, (4, 136)).astype(np.float32)
    marks, scores = regularised(images)
    np.testing.assert_allclose(marks.numpy(), model(images).numpy(), atol=1e-6)
    weights = np.exp(scores.numpy()) / np.exp(scores.numpy()).sum(axis=-1, keepdims=True)
    divergence = losses.js_divergence(weights, losses.cell_targets(targets, 32, 1.0))
    assert np.all(divergence.numpy() > 0.1)   # flat maps against 1-cell Gaussians
    expected = np.mean(plain(targets, marks).numpy()) + 3.0 * np.mean(divergence.numpy())
    logs = regularised.evaluate(images, targets, batch_size=4, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(logs["nme"], np.mean(nme(targets, marks).numpy()), rtol=1e-5)
    with pytest.raises(ValueError, match="integral"):
        losses.HeatmapRegularised(network.build_model(
            "resnet", 68, stages=((8, 1), (8, 1), (16, 1)), head_channels=8), 1.0, 1.0, plain, nme)


def test_calm_augmentation_starts_at_its_epoch():
    calm = landmark.tf.Variable(False)
    callback = callbacks.CalmAugmentation(calm, 8)
    for epoch, expected in [(0, False), (7, False), (8, True), (9, True)]:
        callback.on_epoch_begin(epoch)
        assert bool(calm.numpy()) is expected


def test_nme_weighted_loss_weighs_faces_as_nme_does():
    """Two faces with the same pixel error; the one whose eye corners are
    half as far apart counts twice as much, and the weights average 1."""
    layout = landmark.get_layout("300w68")
    left, right = layout.eye_corners
    true = np.full((2, layout.num_marks, 2), 0.5, np.float32)
    true[0, left, 0], true[0, right, 0] = 0.3, 0.7     # eye distance 0.4
    true[1, left, 0], true[1, right, 0] = 0.4, 0.6     # eye distance 0.2
    pred = true + 0.01
    flat = lambda a: a.reshape(2, -1)  # noqa: E731
    loss = losses.make_loss("wing_nme", layout)(flat(true), flat(pred)).numpy()
    plain = losses.LOSSES["wing"](flat(true), flat(pred)).numpy()
    # weights 1/0.4 and 1/0.2, divided by their mean 3.75: 2/3 and 4/3.
    np.testing.assert_allclose(loss, plain * [2 / 3, 4 / 3], rtol=1e-5)
    assert losses.make_loss("wing", layout) is losses.LOSSES["wing"]


@pytest.mark.parametrize("text, value", [("True", True), ("false", False), ("1", True)])
def test_boolean_flags_read_like_the_original(text, value):
    assert landmark.parse_args([f"--quantization={text}"]).quantization is value
    assert landmark.parse_args(["--export_only"]).export_only is True
    assert landmark.parse_args([]).export_only is False


def test_missing_checkpoint_and_bad_model_path_are_clear(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="no checkpoint in checkpoints/"):
        landmark.main(["--export_only"])
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(FileNotFoundError, match="notamodel is not a model exported"):
        landmark.load_saved_model(tmp_path / "notamodel")


def test_weight_decay_shrinks_kernels_only():
    keras = landmark.keras
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.BatchNormalization()])
    model.compile(optimizer=landmark.make_optimizer(0.1, 0.5), loss="mse")
    before = [v.numpy().copy() for v in model.trainable_variables]
    # A zero loss: only the decay moves anything.
    model.fit(np.zeros((8, 4), np.float32), np.zeros((8, 3), np.float32), verbose=0,
              batch_size=8, epochs=1)
    for variable, old in zip(model.trainable_variables, before):
        if "kernel" in variable.name:
            np.testing.assert_allclose(variable.numpy(), old * (1 - 0.1 * 0.5), rtol=1e-5)
        else:
            np.testing.assert_array_equal(variable.numpy(), old)
    assert isinstance(landmark.make_optimizer(0.1, 0.0), keras.optimizers.Adam)


def test_resume_goes_on_with_the_schedule_and_keeps_the_best(tmp_path, monkeypatch, capsys,
                                                             make_300w_folder):
    """--initial_epoch: the learning rate of a resumed epoch is the one an
    uninterrupted run had there (not the warm-up's), history.csv goes on,
    and best.weights.h5 is replaced only by a better model than the best
    before the resume."""
    import csv
    train, test = make_300w_folder("train", 8), make_300w_folder("test", 2, seed=1)
    gen.main(["--dataset", "300w", "--train_dirs", str(train), "--test_dirs", str(test),
              "--out_dir", str(tmp_path / "records")])
    monkeypatch.chdir(tmp_path)
    flags = ["--train_record", "records/train.record", "--val_record", "records/test.record",
             "--epochs", "3", "--batch_size", "4", "--stages", "8x1,8x1", "--head_channels", "8"]

    def history(run):
        with open(tmp_path / run / "history.csv") as f:
            return list(csv.DictReader(f))

    with pytest.raises(SystemExit, match="--initial_epoch 2: no fresh/last.weights.h5"):
        landmark.main(flags + ["--checkpoint_dir", "fresh", "--initial_epoch", "2"])
    landmark.main(flags + ["--checkpoint_dir", "whole"])
    whole = history("whole")
    best_file = tmp_path / "whole" / "best.weights.h5"
    saved = best_file.read_bytes()
    # Rerun the last epoch as a run interrupted after two epochs would.
    landmark.main(flags + ["--checkpoint_dir", "whole", "--initial_epoch", "2"])
    resumed = history("whole")
    assert [row["epoch"] for row in resumed] == ["0", "1", "2", "2"]
    assert float(resumed[3]["lr"]) == pytest.approx(float(whole[2]["lr"]), rel=1e-5)
    assert float(whole[0]["lr"]) != pytest.approx(float(whole[2]["lr"]), rel=1e-3)
    before = min(float(row["val_nme"]) for row in whole[:2])
    assert (best_file.read_bytes() != saved) == (float(resumed[3]["val_nme"]) < before)
    # That rerun could not take whole/resume.npz (saved after epoch 3);
    # a run stopped after two epochs takes its own.
    assert "fresh optimizer: whole/resume.npz is from after epoch 3" in capsys.readouterr().out
    landmark.main(flags + ["--checkpoint_dir", "part", "--epochs", "2"])
    with pytest.raises(SystemExit, match="part/resume.npz says 2 epochs were trained, not all 3"):
        landmark.main(flags + ["--checkpoint_dir", "part", "--initial_epoch", "3"])
    landmark.main(flags + ["--checkpoint_dir", "part", "--initial_epoch", "2"])
    assert "resuming from part/resume.npz: weights, optimizer" in capsys.readouterr().out
    cpu = landmark.cpu_info()["model"]   # one per start: a resumed run may move machines
    assert landmark.read_card(tmp_path / "part")["cpus"] == [cpu, cpu]
    assert landmark.training_summary(tmp_path / "part", 8)["cpus"] == [cpu]
    # Resumed after its last epoch (stopped in QAT): nothing trains, nothing
    # is added to its history, and its checkpoints go on to what follows.
    last = (tmp_path / "part" / "last.weights.h5").read_bytes()
    landmark.main(flags + ["--checkpoint_dir", "part", "--initial_epoch", "3",
                           "--metrics_out", "part.json"])
    assert "all 3 epochs trained already" in capsys.readouterr().out
    assert len(history("part")) == 3 and landmark.read_card(tmp_path / "part")["cpus"] == [cpu, cpu]
    assert (tmp_path / "part" / "last.weights.h5").read_bytes() == last
    assert (tmp_path / "part.json").is_file()
    (tmp_path / "part" / "resume.npz").write_bytes(b"PK not a zip")
    with pytest.raises(SystemExit, match="part/resume.npz: not a resume state"):
        landmark.main(flags + ["--checkpoint_dir", "part", "--initial_epoch", "2"])
    # A run on faces it validates on keeps, and scores, its last checkpoint.
    import json
    landmark.main(flags + ["--checkpoint_dir", "whole", "--initial_epoch", "2",
                           "--checkpoint", "last", "--metrics_out", "last.json"])
    assert json.loads((tmp_path / "last.json").read_text())["model"] == "whole/last.weights.h5"


def test_best_so_far_reads_the_epochs_before_the_resume(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss,val_nme\n0,9,0.30\n1,8,0.20\n2,7,0.25\n"
                                          "3,6,0.10\n")
    assert landmark.best_so_far(tmp_path, 3) == 0.20
    assert landmark.best_so_far(tmp_path, 0) is None
    assert landmark.best_so_far(tmp_path / "none", 3) is None


def test_weight_average_is_what_validation_and_checkpoints_see(tmp_path):
    """The averaged weights follow the raw ones step by step with the
    ramped decay; validation and the saved checkpoint use the average, and
    the raw weights train on as if no average were kept."""
    keras = landmark.keras
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32)

    def fit(callbacks):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0,
                  validation_data=(x, y), callbacks=callbacks)
        return model

    class Record(keras.callbacks.Callback):  # after the average: sees raw weights
        def on_train_begin(self, logs=None):
            self.initial, self.raw, self.tested = self.model.get_weights(), [], []

        def on_train_batch_end(self, batch, logs=None):
            self.raw.append(self.model.get_weights())

        def on_test_begin(self, logs=None):
            self.tested.append(self.model.get_weights())

    decay, record = 0.9, Record()
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "last.weights.h5"),
                                                 save_weights_only=True)
    averaged = fit([callbacks.WeightAverage(decay), record, checkpoint])
    plain = fit([])

    average, expected = record.initial, []
    for t, raw in enumerate(record.raw, start=1):
        d = min(decay, (1 + t) / (10 + t))
        average = [d * a + (1 - d) * w for a, w in zip(average, raw)]
        expected.append(average)
    for got, want in zip(averaged.get_weights(), expected[-1]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for epoch, tested in enumerate(record.tested):  # 4 steps an epoch
        for got, want in zip(tested, expected[4 * epoch + 3]):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(record.raw[-1], plain.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(record.raw[-1][0], expected[-1][0])
    averaged.load_weights(str(tmp_path / "last.weights.h5"))
    for got, want in zip(averaged.get_weights(), expected[-1]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_resume_state_goes_on_as_if_the_run_had_not_stopped(tmp_path):
    """One epoch, then a new model restored from resume.npz for the second,
    ends where two epochs straight end: the raw weights, Adam's moments and
    step, and the weight average carry over. Restarting from the averaged
    weights with a fresh optimizer (what resuming did before) does not."""
    keras = landmark.keras
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32)

    def new_model():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
                                  keras.layers.BatchNormalization(), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
        return model

    def fit(model, path, epochs, initial_epoch=0, state=None):
        average = callbacks.WeightAverage(0.9, state)
        model.fit(x, y, batch_size=4, epochs=epochs, initial_epoch=initial_epoch,
                  shuffle=False, verbose=0, validation_data=(x, y),
                  callbacks=[average, callbacks.ResumeState(path, average)])
        return model

    straight = fit(new_model(), tmp_path / "straight.npz", 2)
    first = fit(new_model(), tmp_path / "first.npz", 1)
    state = callbacks.ResumeState.load(tmp_path / "first.npz")
    assert state["epochs_done"] == 1 and state["step"] == 4
    assert not np.allclose(state["raw"][0], first.get_weights()[0])  # raw, not the average
    resumed = new_model()
    callbacks.ResumeState.restore(state, resumed, tmp_path / "first.npz")
    fit(resumed, tmp_path / "resumed.npz", 2, initial_epoch=1, state=state)
    for got, want in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    ends = [callbacks.ResumeState.load(tmp_path / name) for name in ("straight.npz", "resumed.npz")]
    for got, want in zip(ends[1]["optimizer"] + ends[1]["raw"], ends[0]["optimizer"] + ends[0]["raw"]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    fresh = new_model()
    fresh.set_weights(first.get_weights())
    fresh.optimizer.iterations.assign(4)
    fit(fresh, tmp_path / "fresh.npz", 2, initial_epoch=1)
    assert not np.allclose(fresh.get_weights()[0], straight.get_weights()[0], atol=1e-3)
    other = network.build_model("resnet", 68, stages=((8, 1),), head_channels=8)
    other.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    with pytest.raises(ValueError, match="first.npz: its .* weights do not fit"):
        callbacks.ResumeState.restore(state, other, tmp_path / "first.npz")


def test_training_minutes_count_an_epoch_held_across_a_stop_at_the_median(tmp_path):
    """History logged before EpochTimer left stops out: one epoch took 40
    times the others (a process stopped for half an hour)."""
    speeds = [10.0, 12.0, 10.0, 0.25, 8.0]
    (tmp_path / "history.csv").write_text("epoch,images_per_s,val_nme\n" + "".join(
        f"{i},{v},0.05\n" for i, v in enumerate(speeds)))
    summary = landmark.training_summary(tmp_path, 600)
    assert summary["images_per_s_median"] == 10.0
    assert summary["train_minutes"] == pytest.approx((60 + 50 + 60 + 60 + 75) / 60)
    assert summary["stopped_epochs_at_median"] == [4]
    (tmp_path / "history.csv").write_text("epoch,images_per_s,val_nme\n0,10,0.05\n1,8,0.05\n")
    assert "stopped_epochs_at_median" not in landmark.training_summary(tmp_path, 600)


def test_stopped_clock_counts_only_gaps_past_its_threshold():
    clock = callbacks.StoppedClock(tick=1.0, threshold=10.0)
    for now in (0.0, 1.0, 2.5, 3.5):  # a busy machine's late ticks are not a stop
        clock.observe(now)
    assert clock.stopped == 0.0
    clock.observe(43.5)  # stopped for 39 s between two ticks
    clock.observe(44.5)
    assert clock.stopped == pytest.approx(39.0)


def test_stopped_clock_sees_a_real_sigstop(tmp_path):
    """A child process's clock counts the time it was held by SIGSTOP."""
    import signal
    import subprocess
    import sys
    import time
    script = ("import sys, time; sys.path.insert(0, %r); import callbacks\n"
              "clock = callbacks.StoppedClock(tick=0.05, threshold=0.5); clock.start()\n"
              "print('ready', flush=True); time.sleep(3); print(clock.stopped, flush=True)\n"
              % str(Path(callbacks.__file__).parent))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    child.send_signal(signal.SIGSTOP)
    time.sleep(1.5)
    child.send_signal(signal.SIGCONT)
    stopped = float(child.stdout.readline())
    assert child.wait(30) == 0
    assert 1.2 < stopped < 1.8


def test_epoch_seconds_leave_out_the_time_stopped(monkeypatch, capsys):
    keras = landmark.keras
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    timer = callbacks.EpochTimer(images_per_epoch=110)
    timer.set_model(model)
    now = iter([0.0, 70.0, 70.0])  # the epoch's begin, its end's observation, its end
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: next(now))
    timer.on_epoch_begin(0)
    timer.clock.observe(5.0)  # the thread's ticks around a 59 s stop
    timer.clock.observe(65.0)
    logs = {}
    timer.on_epoch_end(0, logs)
    assert logs["epoch_seconds"] == pytest.approx(11.0)
    assert logs["images_per_s"] == pytest.approx(10.0)
    assert "epoch 1: 59 s with the process stopped" in capsys.readouterr().out


def test_weight_average_leaves_the_regularisers_metrics_to_keras():
    """Each epoch logs its own training loss and nme: the average must not
    save and restore HeatmapRegularised's metric trackers (it once did, and
    the logs became running means since the first epoch)."""
    keras = landmark.keras
    model = network.build_model("resnet", 68, head="integral", stages=((8, 1), (8, 1), (16, 1)),
                                head_channels=8, integral_cells=32)
    layout = landmark.get_layout("300w68")
    regularised = losses.HeatmapRegularised(model, 1.0, 1.0, losses.make_loss("wing", layout),
                                              losses.nme_metric(layout))
    regularised.compile(optimizer=keras.optimizers.SGD(0.0))
    images = np.random.default_rng(0).uniform(0, 255, (8, 128, 128, 3)).astype(np.float32)
    targets = np.random.default_rng(1).uniform(0.2, 0.8, (8, 136)).astype(np.float32)

    class Count(keras.callbacks.Callback):  # faces the nme tracker has seen
        counts = []

        def on_train_batch_end(self, batch, logs=None):
            self.counts.append(float(self.model.nme_tracker.count.numpy()))

    count = Count()
    regularised.fit(images, targets, batch_size=4, epochs=2, shuffle=False, verbose=0,
                    validation_data=(images, targets),
                    callbacks=[callbacks.WeightAverage(0.9), count])
    assert count.counts == [4, 8, 4, 8]


def test_integral_head_end_to_end(tmp_path, monkeypatch, make_300w_folder):
    """--head integral: trained, exported up to its score maps, reloaded and
    converted to int8 with the float tail left to geometry.decode_scores."""
    train, test = make_300w_folder("train", 10), make_300w_folder("test", 4, seed=1)
    records = tmp_path / "records"
    gen.main(["--dataset", "300w", "--train_dirs", str(train), "--test_dirs", str(test),
              "--out_dir", str(records)])
    _train_eval_export(tmp_path, monkeypatch, records, "300w68",
                       ["--head", "integral", "--stages", "8x1,8x1,16x1", "--head_channels", "8",
                        "--occlusion", "0.5", "--weight_decay", "0.01",
                        "--weight_average", "0.9", "--integral_cells", "32",
                        "--loss", "wing_nme", "--calm_epochs", "1", "--heatmap_loss", "2"])
    card = json.loads((tmp_path / "exported" / landmark.MODEL_CARD).read_text())
    assert card["options"]["head"] == "integral" and "score maps" in card["output"]
    assert card["options"]["integral_cells"] == 32 and card["loss"] == "wing_nme"
    assert card["augmentation"]["calm_epochs"] == 1
    assert card["augmentation"]["occlusion"] == 0.5 and card["weight_decay"] == 0.01
    assert card["weight_average"] == 0.9 and card["heatmap_loss"] == {"weight": 2, "sigma": 1}
    import map_spread
    map_spread.main([str(tmp_path / "exported"), "--record", str(records / "test.record"),
                     "--out", str(tmp_path / "spread.json")])
    spread = json.loads((tmp_path / "spread.json").read_text())["models"][str(tmp_path / "exported")]
    # A barely trained map is near uniform (0.41 of the side); none can pass
    # half the diagonal (all weight split between opposite corners).
    assert spread["faces"] == 4 and 0 < spread["p10_cells"] <= spread["p90_cells"] < 31 / 2 ** 0.5
    # The PTQ techniques rebuild the network as exported, from the SavedModel's variables.
    import ptq_techniques
    from geometry import decode_scores
    float_predict, _ = landmark.load_saved_model(tmp_path / "exported")
    rebuilt, _ = ptq_techniques.load_float_model(tmp_path / "exported")
    images = next(iter(dataset.eval_dataset(records / "test.record", 8)))[0].numpy()
    np.testing.assert_allclose(decode_scores(rebuilt(images, training=False).numpy()),
                               float_predict(images), atol=1e-5)

    flags = ["--train_record", str(records / "train.record"),
             "--val_record", str(records / "test.record")]
    landmark.main(flags + ["--quantization", "--epochs", "1", "--batch_size", "4",
                           "--weight_average", "0.5"])
    qat, _ = landmark.load_checkpoint("quantized_checkpoints", quantize=True)
    # The softmax and expectation stay float: only the network before them is wrapped.
    wrapped = {layer.name for layer in qat.layers if hasattr(layer, "layer")}
    assert "quant_mark_scores" in wrapped and not wrapped & {
        "quant_" + name for name in network.INTEGRAL_TAIL}
    landmark.main(["--export_only", "--quantization"])
    predict, qat_card = landmark.load_saved_model(tmp_path / "exported_quantized")
    assert qat_card["weight_average"] == 0.5  # QAT's own average, not the float run's 0.9
    assert qat_card["loss"] == "wing_nme"  # ... but does its loss
    assert qat_card["heatmap_loss"] == card["heatmap_loss"]  # ... and its regulariser

    import ptq_benchmark
    from tflite_model import TFLiteModel
    np.testing.assert_allclose(predict(images), qat(images, training=False).numpy(), atol=1e-5)
    int8 = TFLiteModel(ptq_benchmark.convert(tmp_path / "exported_quantized", "int8_only", images))
    assert list(int8.output["shape"]) == [1, 32, 32, 68]
    ok, note = ptq_benchmark.check_dtypes(int8.content, "int8_only")
    assert ok, note
    np.testing.assert_allclose(int8.predict(images), predict(images), atol=0.05)


def test_map_spread_names_a_missing_record_and_a_model_path_that_is_not_a_model(tmp_path):
    import map_spread
    with pytest.raises(SystemExit, match="no.record"):
        map_spread.main([str(tmp_path / "nothing"), "--record", str(tmp_path / "no.record")])
    record = tmp_path / "some.record"
    record.write_bytes(b"")
    with pytest.raises(SystemExit, match="nothing is not a model"):
        map_spread.main([str(tmp_path / "nothing"), "--record", str(record)])


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_precision_flag_trains_a_tiny_model_and_exports_float32(tmp_path, monkeypatch,
                                                                make_300w_folder, precision,
                                                                capsys):
    """Both precisions train the integral head with its regulariser and the
    wild augmentation; the checkpoint, the export and the policy after
    training are float32 either way."""
    train, test = make_300w_folder("train", 8), make_300w_folder("test", 4, seed=1)
    gen.main(["--dataset", "300w", "--train_dirs", str(train), "--test_dirs", str(test),
              "--out_dir", str(tmp_path / "records")])
    monkeypatch.chdir(tmp_path)
    records = ["--train_record", "records/train.record", "--val_record", "records/test.record"]
    tiny = ["--head", "integral", "--head_channels", "8", "--stages", "8x1,8x1,8x1,8x1",
            "--heatmap_loss", "1", "--wild", "1", "--weight_average", "0.9"]
    landmark.main(records + ["--epochs", "2", "--batch_size", "4", "--precision", precision,
                             "--metrics_out", "m.json", *tiny])
    assert f"precision: {precision}" in capsys.readouterr().out
    card = json.loads((tmp_path / "checkpoints" / "model.json").read_text())
    assert card["precision"] == precision and card["augmentation"]["wild"] == 1.0
    assert landmark.keras.mixed_precision.global_policy().name == "float32"
    history = landmark.history_rows("checkpoints")
    assert len(history) == 2 and all(np.isfinite(float(r["loss"])) for r in history)
    model, _ = landmark.load_checkpoint("checkpoints")
    assert all(w.dtype == np.float32 for w in model.get_weights())
    assert np.isfinite(json.loads((tmp_path / "m.json").read_text())["nme"])
    # QAT always trains in float32.
    landmark.main(records + ["--quantization", "--epochs", "1", "--batch_size", "4",
                             "--precision", precision])
    assert "precision: float32 (QAT" in capsys.readouterr().out


def test_auto_precision_follows_the_cpu(monkeypatch, capsys):
    monkeypatch.setattr(landmark, "cpu_has_bf16", lambda: False)
    assert landmark.set_precision("auto") == "float32"
    monkeypatch.setattr(landmark, "cpu_has_bf16", lambda: True)
    assert landmark.set_precision("auto") == "mixed_bfloat16"
    landmark.keras.mixed_precision.set_global_policy("float32")
    assert "no bf16" in capsys.readouterr().out


def test_hard_view_scores_every_kind_and_group(tmp_path, monkeypatch, make_300w_folder):
    train = make_300w_folder("train", 6)
    helen, lfpw = make_300w_folder("helen", 3, seed=1), make_300w_folder("lfpw", 2, seed=2)
    gen.main(["--dataset", "300w", "--train_dirs", str(train), "--test_dirs", str(helen),
              str(lfpw), "--out_dir", str(tmp_path / "records")])
    record = tmp_path / "records" / "test.record"
    monkeypatch.setattr(landmark.hard_view, "profile_views", lambda *args: None)  # no 3D model
    perfect = landmark.evaluate_hard(lambda images: np.full((len(images), 136), 0.5), record)
    assert set(perfect["kinds"]) == set(landmark.hard_view.KINDS)
    assert perfect["all"]["num_faces"] == 5 * len(landmark.hard_view.KINDS)
    assert set(perfect["all"]["per_group"]) == {"helen", "lfpw"}
    assert perfect["kinds"]["yaw"]["nme"] > 0
    # The yaw kind's squash (0.6-0.75 of the face's width) narrows the eyes,
    # the more the more level they are; "unturned" takes the same errors
    # over the unturned face's eye distance.
    yaw = perfect["kinds"]["yaw"]
    ratio = np.array(yaw["unturned"]["nmes"]) / np.array(yaw["nmes"])
    assert np.all((ratio > 0.5) & (ratio < 1)) and ratio.mean() < 0.9
    assert "unturned" not in perfect["kinds"]["rotation"]
    # With the 3D model, the profile kind is scored too but kept out of "all".
    monkeypatch.setattr(landmark.hard_view, "profile_views",
                        lambda images, marks, seed: landmark.hard_view.views(images, marks, "yaw", 7))
    again = landmark.evaluate_hard(lambda images: np.full((len(images), 136), 0.5), record)
    assert again["kinds"]["occlusion"]["nmes"] == perfect["kinds"]["occlusion"]["nmes"]
    assert again["kinds"]["profile"]["num_faces"] == 5
    assert again["all"] == perfect["all"]


def _tiny_records(tmp_path, make_300w_folder, train=6, test=3):
    gen.main(["--dataset", "300w", "--train_dirs", str(make_300w_folder("train", train)),
              "--test_dirs", str(make_300w_folder("test", test, seed=1)),
              "--out_dir", str(tmp_path / "records")])
    return ["--train_record", str(tmp_path / "records" / "train.record"),
            "--val_record", str(tmp_path / "records" / "test.record")]


@pytest.mark.parametrize("flags, message", [
    (["--batch_size", "0"], "--batch_size must be >= 1"),
    (["--epochs", "0"], "--epochs must be >= 1"),
])
def test_bad_numbers_are_named_before_anything_is_made(tmp_path, monkeypatch, flags, message,
                                                       capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        landmark.main(flags)
    assert message in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


def test_runs_that_cannot_start_say_why_and_leave_no_folder(tmp_path, monkeypatch,
                                                            make_300w_folder):
    records = _tiny_records(tmp_path, make_300w_folder)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="--batch_size 64 is larger than the 6 training faces"):
        landmark.main(records + ["--batch_size", "64"])
    assert not (tmp_path / "checkpoints").exists()
    with pytest.raises(SystemExit, match="no checkpoint in checkpoints"):
        landmark.main(records + ["--quantization", "--batch_size", "2"])
    assert not (tmp_path / "quantized_checkpoints").exists()
    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit, match="output folder afile is a file"):
        landmark.main(records + ["--checkpoint_dir", "afile", "--batch_size", "2"])
    with pytest.raises(SystemExit, match="output folder afile is a file"):
        landmark.main(records + ["--metrics_out", "afile/m.json", "--batch_size", "2"])


def test_records_of_the_wrong_kind_are_named(tmp_path, monkeypatch, make_300w_folder,
                                             make_wflw_tree):
    records = _tiny_records(tmp_path, make_300w_folder)
    monkeypatch.chdir(tmp_path)
    landmark.main(records + ["--epochs", "1", "--batch_size", "2"])
    gen.main(["--data_dir", str(make_wflw_tree(train=3, test=2)), "--out_dir", "wflw"])
    with pytest.raises(SystemExit, match="the model marks 300w68 .* wflw/test.record holds "
                                         "wflw98 faces"):
        landmark.main(["--eval_only", "--val_record", "wflw/test.record"])
    # Other fields, and random bytes that happen to frame as TFRecords.
    import tensorflow as tf
    with tf.io.TFRecordWriter("other.record") as writer:
        example = tf.train.Example(features=tf.train.Features(feature={
            "x": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))}))
        writer.write(example.SerializeToString())
        writer.write(bytes(range(256)))
    with pytest.raises(SystemExit, match="other.record is a TFRecord file but not of faces"):
        landmark.main(["--eval_only", "--val_record", "other.record"])


def test_init_from_starts_with_the_exports_weights(tmp_path, monkeypatch, make_300w_folder):
    records = _tiny_records(tmp_path, make_300w_folder)
    monkeypatch.chdir(tmp_path)
    tiny = ["--stages", "8x1,8x1", "--head_channels", "8", "--head", "integral",
            "--integral_cells", "16"]
    landmark.main(records + ["--epochs", "1", "--batch_size", "4", *tiny])
    landmark.main(["--export_only"])
    predict, card = landmark.load_saved_model(tmp_path / "exported")
    model = landmark.make_model(card)
    landmark.load_export_weights(model, tmp_path / "exported")
    images = next(iter(dataset.eval_dataset(tmp_path / "records" / "test.record", 3)))[0].numpy()
    np.testing.assert_allclose(landmark.keras_predict(model)(images), predict(images), atol=1e-5)
    # A fine-tune takes the export's architecture, whatever the model flags say.
    landmark.main(records + ["--epochs", "1", "--batch_size", "4", "--init_from", "exported",
                             "--checkpoint_dir", "tuned", "--lr", "1e-9"])
    tuned = json.loads((tmp_path / "tuned" / "model.json").read_text())
    assert tuned["options"] == card["options"] and tuned["init_from"] == "exported"
    other = landmark.make_model({**card, "options": {**card["options"], "head_channels": 16}})
    with pytest.raises(ValueError, match="exported"):
        landmark.load_export_weights(other, tmp_path / "exported")
