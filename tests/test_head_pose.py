"""head_pose.py: the pose of a projected generic face is recovered."""
import cv2
import numpy as np
import pytest

import head_pose


@pytest.mark.parametrize("yaw, pitch, roll", [(0, 0, 0), (30, -10, 5), (-55, 20, -25), (70, 5, 10)])
def test_pose_of_a_synthetic_projection_is_recovered(yaw, pitch, roll):
    indices, points = head_pose.face_shape()
    size = (640, 480)
    rotation = head_pose.rotation_from(yaw, pitch, roll)
    assert head_pose.euler_degrees(rotation) == pytest.approx((yaw, pitch, roll), abs=1e-6)
    projected, _ = cv2.projectPoints(points, cv2.Rodrigues(rotation)[0], np.array([15., -10., 700.]),
                                     head_pose.camera_matrix(size), None)
    marks = np.full((68, 2), 320.0)            # jaw marks: unused by the fit
    marks[indices] = projected.reshape(-1, 2)
    pose = head_pose.head_pose(marks, size)
    assert pose["yaw"] == pytest.approx(yaw, abs=2)
    assert pose["pitch"] == pytest.approx(pitch, abs=2)
    assert pose["roll"] == pytest.approx(roll, abs=2)


def test_signs_follow_the_image():
    indices, points = head_pose.face_shape()
    size = (640, 480)
    rotation = head_pose.rotation_from(30, 0, 0)
    projected, _ = cv2.projectPoints(points, cv2.Rodrigues(rotation)[0], np.array([0., 0., 700.]),
                                     head_pose.camera_matrix(size), None)
    marks = np.full((68, 2), 320.0)
    marks[indices] = projected.reshape(-1, 2)
    nose_tip, eye_middle = marks[30], (marks[36] + marks[45]) / 2
    assert nose_tip[0] < eye_middle[0]       # positive yaw: the nose points to the image's left


def test_bad_marks_give_no_pose():
    assert head_pose.head_pose(np.zeros((98, 2)), (640, 480)) is None
    assert head_pose.head_pose(np.full((68, 2), np.nan), (640, 480)) is None



def _projected(yaw, pitch, roll, size=(640, 480)):
    indices, points = head_pose.face_shape()
    rotation = head_pose.rotation_from(yaw, pitch, roll)
    projected, _ = cv2.projectPoints(points, cv2.Rodrigues(rotation)[0], np.array([15., -10., 700.]),
                                     head_pose.camera_matrix(size), None)
    marks = np.full((68, 2), 320.0)            # jaw marks: unused by the fit
    marks[indices] = projected.reshape(-1, 2)
    return marks


def test_a_guess_from_the_last_frame_finds_the_same_pose():
    """Video starts each frame's fit from the last frame's pose instead of
    EPnP: the answer is the same."""
    size = (640, 480)
    last = head_pose.head_pose(_projected(25, -10, 5), size)
    marks = _projected(27, -9, 5) + np.random.default_rng(0).normal(0, 0.5, (68, 2))
    plain = head_pose.head_pose(marks, size)
    guessed = head_pose.head_pose(marks, size, guess=last)
    for angle in ("yaw", "pitch", "roll"):
        assert guessed[angle] == pytest.approx(plain[angle], abs=0.05)
