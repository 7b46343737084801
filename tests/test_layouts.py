import numpy as np
import pytest
from conftest import SHARED

import generate_mesh_dataset as gen
from layouts import LAYOUTS, get_layout, layout_for_count


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_mirror_is_an_involution_swapping_the_eye_corners(name):
    layout = LAYOUTS[name]
    mirror = np.array(layout.mirror)
    assert sorted(mirror) == list(range(layout.num_marks))
    np.testing.assert_array_equal(mirror[mirror], np.arange(layout.num_marks))
    left, right = layout.eye_corners
    assert mirror[left] == right


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
