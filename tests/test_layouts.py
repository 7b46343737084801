import numpy as np
import pytest
from conftest import SHARED

import generate_mesh_dataset as gen
from layouts import LAYOUTS, flip_averaged, get_layout, layout_for_count


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_mirror_is_an_involution_swapping_the_eye_corners(name):
    layout = LAYOUTS[name]
    mirror = np.array(layout.mirror)
    assert sorted(mirror) == list(range(layout.num_marks))
    np.testing.assert_array_equal(mirror[mirror], np.arange(layout.num_marks))
    left, right = layout.eye_corners
    assert mirror[left] == right


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_regions_cover_every_mark_once_and_mirror_onto_themselves(name):
    layout = LAYOUTS[name]
    marks = [i for _, region in layout.regions for i in region]
    assert sorted(marks) == list(range(layout.num_marks))
    mirror = np.array(layout.mirror)
    for region_name, region in layout.regions:
        assert set(mirror[list(region)]) == set(region), region_name
    assert set(layout.eye_corners) <= set(dict(layout.regions)["eyes"])


def _mean_shape(faces):
    """Faces (F, N, 2) -> mean shape with each face centred and scaled by
    its eye-corner distance, so faces of any size and place average."""
    centred = faces - faces.mean(axis=1, keepdims=True)
    return centred.mean(axis=0)


def _check_mirror_on_real_faces(faces, layout):
    mean = _mean_shape(faces)
    flipped = mean * [-1, 1]
    relabelled = flipped[np.array(layout.mirror)]
    scale = np.linalg.norm(mean[layout.eye_corners[0]] - mean[layout.eye_corners[1]])
    # Each relabelled mark of the mirrored average face lands on the mark of
    # the same name: a wrong pair would be off by a large part of the face.
    assert np.abs(relabelled - mean).max() < 0.12 * scale
    # And the table really swaps left and right: without it, paired marks miss.
    assert np.abs(flipped - mean).max() > 0.5 * scale


@pytest.mark.skipif(not (SHARED / "wflw_annotation_sample").is_dir(), reason="no WFLW sample")
def test_wflw_mirror_pairs_on_real_annotations():
    path = SHARED / "wflw_annotation_sample" / "list_98pt_test_expression.txt"
    faces = np.array([gen.parse_wflw_line(line, str(path))[0]
                      for line in path.read_text().splitlines()])
    _check_mirror_on_real_faces(faces, LAYOUTS["wflw98"])


@pytest.mark.skipif(not (SHARED / "300w" / "helen_trainset").is_dir(), reason="no 300-W data")
def test_300w_mirror_pairs_on_real_annotations():
    files = sorted((SHARED / "300w" / "helen_trainset").glob("*.pts"))[:300]
    faces = np.array([gen.read_pts(p) for p in files])
    _check_mirror_on_real_faces(faces, LAYOUTS["300w68"])


def test_lookup_errors_are_clear():
    assert layout_for_count(98).name == "wflw98"
    assert layout_for_count(68).eye_corners == (36, 45)
    with pytest.raises(ValueError, match="no mark layout has 5 points"):
        layout_for_count(5)
    with pytest.raises(ValueError, match="unknown mark layout 'x'"):
        get_layout("x")


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_flip_test_cancels_a_sideways_bias(name):
    """A predictor that is right on a face and on its mirror image except for
    the same +3 px sideways bias in both: the flip average cancels the x bias
    and keeps the y bias, each mark under its own label."""
    layout, size = LAYOUTS[name], 128
    mirror = np.array(layout.mirror)
    rng = np.random.default_rng(0)
    truth = rng.uniform(10, 117, (layout.num_marks, 2))
    truth_of_mirror_image = np.column_stack([size - 1 - truth[:, 0], truth[:, 1]])[mirror]
    bias = np.array([3.0, 2.0])

    def predict(images):  # a marker pixel at the left tells it the image is not mirrored
        outputs = [(truth if image[0, 0, 0] else truth_of_mirror_image) + bias
                   for image in images]
        return np.array(outputs).reshape(len(images), -1) / size

    images = np.zeros((2, size, size, 3), np.float32)
    images[:, 0, 0] = 1
    averaged = flip_averaged(predict, size)(images).reshape(2, -1, 2) * size
    np.testing.assert_allclose(averaged, np.broadcast_to(truth + [0, 2], averaged.shape),
                               atol=1e-9)
    # Without the flip test the bias stays.
    np.testing.assert_allclose(predict(images[:1]).reshape(-1, 2) * size - truth,
                               np.broadcast_to(bias, truth.shape))


def test_wflw_to_300w_keeps_mirror_pairs_and_eye_corners():
    from layouts import WFLW_TO_300W
    picked = np.array(WFLW_TO_300W)
    w300, wflw = LAYOUTS["300w68"], LAYOUTS["wflw98"]
    assert len(picked) == 68 and len(set(WFLW_TO_300W)) == 68
    # A mark's mirror partner maps to its WFLW mark's mirror partner.
    assert (np.array(wflw.mirror)[picked] == picked[np.array(w300.mirror)]).all()
    assert tuple(picked[list(w300.eye_corners)]) == wflw.eye_corners
