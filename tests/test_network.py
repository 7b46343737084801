"""The integral head: its in-graph tail and geometry.decode_scores agree,
and a peaked score map decodes to its cell's centre."""
import numpy as np
import pytest

import geometry
import network


def test_peaked_score_map_decodes_to_the_cell_centre():
    scores = np.full((1, 16, 16, 2), -50.0, np.float32)
    scores[0, 3, 10, 0] = 50.0       # mark 0: row 3, column 10
    scores[0, 15, 0, 1] = 50.0       # mark 1: bottom-left cell
    np.testing.assert_allclose(geometry.decode_scores(scores),
                               [[10.5 / 16, 3.5 / 16, 0.5 / 16, 15.5 / 16]], atol=1e-6)
    # Flat scores: the expected position is the map's centre.
    np.testing.assert_allclose(geometry.decode_scores(np.zeros((2, 8, 8, 3))), 0.5, atol=1e-6)
    marks = np.random.default_rng(0).uniform(size=(3, 10))
    np.testing.assert_array_equal(geometry.decode_scores(marks), marks.astype(np.float32))


@pytest.mark.parametrize("shape", [(2, 8, 4, 3), (2, 3, 4)])
def test_decode_refuses_other_shapes(shape):
    with pytest.raises(ValueError, match="neither"):
        geometry.decode_scores(np.zeros(shape))


@pytest.mark.parametrize("cells", [16, 32])
def test_graph_tail_matches_numpy_decode(cells):
    model = network.build_model("resnet", 5, head="integral", head_channels=8,
                                stages=((8, 1), (8, 1), (8, 1)), integral_cells=cells)
    scores_model = network.scores_model(model)
    assert scores_model is not model and scores_model.output.shape[1:] == (cells, cells, 5)
    layer = model.get_layer(network.SCORES_LAYER)
    kernel, bias = layer.get_weights()
    rng = np.random.default_rng(1)
    layer.set_weights([rng.normal(0, 0.5, kernel.shape), rng.normal(0, 1, bias.shape)])
    images = rng.uniform(0, 255, (3, 128, 128, 3)).astype(np.float32)
    marks = model(images, training=False).numpy()
    assert marks.shape == (3, 10)
    np.testing.assert_allclose(
        geometry.decode_scores(scores_model(images, training=False).numpy()), marks, atol=1e-5)
    # A dense-head model is its own export.
    dense = network.build_model("resnet", 5, head_channels=8, stages=((8, 1), (8, 1)))
    assert network.scores_model(dense) is dense


def test_stem_blocks_work_at_half_the_input_side():
    plain = network.build_model("resnet", 5, head_channels=8, stages=((8, 1), (8, 1)))
    stem = network.build_model("resnet", 5, head_channels=8, stages=((8, 1), (8, 1)), stem=(4, 2))
    convs = [layer for layer in stem.layers if isinstance(layer, network.layers.Conv2D)]
    assert convs[0].filters == 4 and convs[0].strides == (2, 2)
    # two residual blocks of two 3x3 convolutions each, all at 64 px, before the stages
    assert [c.output.shape[1:] for c in convs[1:5]] == [(64, 64, 4)] * 4
    plain_convs = [layer for layer in plain.layers if isinstance(layer, network.layers.Conv2D)]
    assert plain_convs[0].filters == network.STEM_FILTERS and len(convs) == len(plain_convs) + 4


def test_integral_head_needs_a_16_cell_map():
    with pytest.raises(ValueError, match="16×16"):
        network.build_model("resnet", 5, head="integral", stages=((8, 1),))
    # 32 cells need the 32×32 map as well; 64 px maps are not among the stages'.
    with pytest.raises(ValueError, match="64×64"):
        network.build_model("resnet", 5, head="integral", stages=((8, 1), (8, 1)),
                            integral_cells=64)
    with pytest.raises(ValueError, match="integral_cells needs"):
        network.build_model("resnet", 5, integral_cells=32)
    with pytest.raises(ValueError, match="unknown head"):
        network.build_model("resnet", 5, head="heatmap")
