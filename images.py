"""Reading photos: one reader for the converter and the predictor, so both
refuse the same broken files."""
import os

import cv2


def truncated_jpeg(path):
    """True for a JPEG file cut short: OpenCV decodes those with only a
    warning and a grey lower part, so the end-of-image marker is checked."""
    with open(path, "rb") as handle:
        if handle.read(2) != b"\xff\xd8":
            return False
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 1024))
        tail = handle.read()
    # 0xFFD9 cannot occur inside entropy-coded data (0xFF is stuffed there).
    return b"\xff\xd9" not in tail


def read_image(path):
    """(BGR uint8 array, None), or (None, why) for a photo that is missing,
    unreadable or a truncated JPEG."""
    if not os.path.exists(path):
        return None, "missing"
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return None, "unreadable"
    if truncated_jpeg(path):
        return None, "truncated JPEG"
    return image, None
