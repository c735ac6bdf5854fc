"""The network face detectors, YuNet (the default) and BlazeFace: the shipped ONNX files run for
real on real images. What a detector owes the pipeline is checked on both; what one does its own
way (BlazeFace's passes and tiles, YuNet's enlarged small inputs), on that one."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest

from contract.detector import (
    METADATA_KEY,
    YUNET_METADATA_KEY,
    AnchorOptions,
    DetectorMetadata,
    YuNetMetadata,
)
from harness.photos import VIDEO_SIZES, face_in_scene, scene, scene_jpeg
from service.blazeface import BlazeFaceDetector, ssd_anchors, weighted_nms
from service.faces import DetectorError, FaceBox
from service.haar import HaarDetector
from service.settings import DEFAULT_FACE_DETECTOR_PATH, DEFAULT_YUNET_PATH
from service.yunet import YuNetDetector
from tests.unit.service.test_faces import FACE_CENTRE, centre

NETWORKS = {
    "yunet": (YuNetDetector, DEFAULT_YUNET_PATH),
    "blazeface": (BlazeFaceDetector, DEFAULT_FACE_DETECTOR_PATH),
}


def network(name: str, **options) -> BlazeFaceDetector | YuNetDetector:
    kind, path = NETWORKS[name]
    return kind(path, **options)


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def any_network(request) -> BlazeFaceDetector | YuNetDetector:
    return network(request.param, intra_op_threads=1)


@pytest.fixture(scope="module")
def detector() -> BlazeFaceDetector:
    return BlazeFaceDetector(DEFAULT_FACE_DETECTOR_PATH, intra_op_threads=1)


@pytest.fixture(scope="module")
def yunet() -> YuNetDetector:
    return YuNetDetector(DEFAULT_YUNET_PATH, intra_op_threads=1)


def test_finds_the_one_face_in_the_portrait_where_haar_does(any_network, portrait_gray):
    (box,) = any_network.detect(portrait_gray)
    (haar,) = HaarDetector().detect(portrait_gray)
    x, y = centre(box)
    assert abs(x - FACE_CENTRE[0]) < 10 and abs(y - FACE_CENTRE[1]) < 10
    assert box.width == box.height
    # The box correction makes it frame the face about as the Haar box does (crop_margin
    # holds): on FER2013 the medians agree; on one face, within the spread (quartiles of the
    # FER2013 crop over the box: 0.95 to 1.16 for BlazeFace, 0.99 to 1.14 for Haar, 0.94 to
    # 1.16 for YuNet).
    assert 0.9 * haar.width < box.width < 1.3 * haar.width
    assert abs(x - centre(haar)[0]) < 10 and abs(y - centre(haar)[1]) < 10


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((480, 640), np.uint8),
        np.full((300, 300), 255, np.uint8),
        np.random.default_rng(0).integers(0, 256, (480, 640), dtype=np.uint8),
        np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (300, 1)),
    ],
    ids=["black", "white", "noise", "gradient"],
)
def test_no_face_where_there_is_none(any_network, image):
    assert any_network.detect(image) == []


def test_boxes_map_back_to_a_rescaled_image(any_network, portrait_gray):
    (small,) = any_network.detect(portrait_gray)
    large = cv2.resize(portrait_gray, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    (box,) = any_network.detect(large)
    assert abs(centre(box)[0] - 4 * centre(small)[0]) < 16
    assert abs(centre(box)[1] - 4 * centre(small)[1]) < 16
    assert abs(box.width - 4 * small.width) < 0.1 * 4 * small.width


@pytest.mark.parametrize("size", [*VIDEO_SIZES, (512, 512), (1024, 768)])
def test_one_face_in_place_at_every_size(any_network, size):
    gray = np.asarray(scene(*size).convert("L"))
    (box,) = any_network.detect(gray)
    assert face_in_scene(*centre(box), *size)


def test_boxes_map_back_on_a_tall_image(any_network, portrait_gray):
    """A portrait-orientation frame: the letterbox pads left and right, not above and below."""
    tall = np.full((900, 512), 90, np.uint8)
    tall[300:812] = portrait_gray
    (box,) = any_network.detect(tall)
    x, y = centre(box)
    assert abs(x - FACE_CENTRE[0]) < 10 and abs(y - 300 - FACE_CENTRE[1]) < 10


def test_faces_come_largest_first_and_max_faces_keeps_the_largest(any_network, two_faces):
    gray = cv2.imdecode(np.frombuffer(two_faces, np.uint8), cv2.IMREAD_GRAYSCALE)
    large, small = any_network.detect(gray)
    assert large.area > small.area
    assert large.x > 256 > small.x
    assert any_network.detect(gray, max_faces=1) == [large]


def group_photo(portrait_gray: np.ndarray, face: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A 1920x1080 frame with three copies of the portrait whose faces are about `face` pixels
    wide, one of them straddling where tile edges fall; and where the faces' centres are."""
    side = round(512 * face / 95)
    small = cv2.resize(portrait_gray, (side, side), interpolation=cv2.INTER_AREA)
    frame = np.full((1080, 1920), 110, np.uint8)
    centres = []
    for x, y in ((150, 120), (900, 520), (1500, 200)):
        frame[y : y + side, x : x + side] = small
        centres.append((x + FACE_CENTRE[0] * side / 512, y + FACE_CENTRE[1] * side / 512))
    return frame, centres


def test_a_larger_detection_side_finds_small_faces_in_a_large_photo(portrait_gray):
    """One 320-pixel view of a 1080p photo sees a 64-pixel face at 11 pixels; DETECTION_MAX_SIDE
    1920 covers it with 640-pixel tiles, and every face is found, in place, once."""
    frame, centres = group_photo(portrait_gray, face=64)
    whole = BlazeFaceDetector(DEFAULT_FACE_DETECTOR_PATH, max_side=640)
    tiled = BlazeFaceDetector(DEFAULT_FACE_DETECTOR_PATH, max_side=1920)
    assert len(whole.detect(frame)) < 3
    boxes = tiled.detect(frame)
    assert len(boxes) == 3
    for x, y in centres:
        assert any(abs(centre(box)[0] - x) < 12 and abs(centre(box)[1] - y) < 12 for box in boxes)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_min_face_pixels_drops_faces_smaller_than_it(portrait_gray, name):
    """The portrait's face is ~95 px on a 512 px image: ~119 px on a 640 px copy."""
    assert len(network(name, min_face_pixels=100).detect(portrait_gray)) == 1
    assert network(name, min_face_pixels=140).detect(portrait_gray) == []


def test_anchors_are_mediapipes():
    """The counts MediaPipe's graphs declare (num_boxes): 2304 for full range at 192 px, 896
    for short range at 128 px; centres in the middle of their cells, row by row."""
    full = ssd_anchors(AnchorOptions(1, (4,), interpolated_scale_aspect_ratio=0.0), 192, 192)
    assert full.shape == (2304, 2)
    assert full[:2].tolist() == [[2.0, 2.0], [6.0, 2.0]]
    short = ssd_anchors(AnchorOptions(4, (8, 16, 16, 16)), 128, 128)
    assert short.shape == (896, 2)
    assert short[:3].tolist() == [[4.0, 4.0], [4.0, 4.0], [12.0, 4.0]]  # 2 anchors a cell
    assert short[512:519].tolist() == [[8.0, 8.0]] * 6 + [[24.0, 8.0]]  # then 6 a cell
    assert ssd_anchors(AnchorOptions(1, (4,), interpolated_scale_aspect_ratio=0.0), 256, 320)[
        -1
    ].tolist() == [318.0, 254.0]


def test_weighted_nms_merges_overlapping_boxes_by_score():
    boxes = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]], np.float32)
    merged = weighted_nms(boxes, np.array([0.9, 0.1, 0.8]), iou=0.3)
    assert len(merged) == 2
    np.testing.assert_allclose(merged[0], [0.2, 0, 10.2, 10], atol=1e-5)
    np.testing.assert_allclose(merged[1], [50, 50, 60, 60])


def test_the_shipped_file_says_what_it_is():
    model = onnx.load(str(DEFAULT_FACE_DETECTOR_PATH))
    metadata = DetectorMetadata.from_metadata({p.key: p.value for p in model.metadata_props})
    assert metadata.source["wheel_sha256"] == (
        "a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4"
    )
    assert metadata.source["file"].endswith("face_detection_full_range_sparse.tflite")
    assert metadata.trained_size == 192 and metadata.input_sizes == (320, 128)
    assert 1.0 < metadata.box_correction.scale < 1.15
    assert DEFAULT_FACE_DETECTOR_PATH.stat().st_size < 1_500_000


def test_the_shipped_yunet_says_what_it_is():
    model = onnx.load(str(DEFAULT_YUNET_PATH))
    metadata = YuNetMetadata.from_metadata({p.key: p.value for p in model.metadata_props})
    assert metadata.source["file_sha256"] == (
        "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
    )
    assert metadata.strides == (8, 16, 32)
    assert 0.85 < metadata.box_correction.scale < 1.0
    assert DEFAULT_YUNET_PATH.stat().st_size < 300_000


@pytest.mark.parametrize(
    ("name", "key"), [("blazeface", METADATA_KEY), ("yunet", YUNET_METADATA_KEY)]
)
def test_unusable_files_are_refused_with_what_to_do(tmp_path, model_path, name, key):
    kind, _ = NETWORKS[name]
    with pytest.raises(DetectorError, match=r"no face detector at .*FACE_DETECTOR=.*haar"):
        kind(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(DetectorError, match="not a model onnxruntime can load"):
        kind(junk)
    with pytest.raises(DetectorError, match=f"no '{key}' metadata"):
        kind(model_path)  # the emotion test model: a model, not a detector


def test_a_yunet_file_on_three_colour_channels_is_refused_with_what_to_do(tmp_path):
    """A file built before the channel fold (OpenCV Zoo's three channels) would be fed one: it
    is refused at start, with the command that builds the current file."""
    proto = onnx.load(str(DEFAULT_YUNET_PATH))
    (first,) = [node for node in proto.graph.node if "input" in node.input]
    weights = next(init for init in proto.graph.initializer if init.name == first.input[1])
    gray = onnx.numpy_helper.to_array(weights)
    colour = np.repeat(gray / 3, 3, axis=1)
    weights.CopyFrom(onnx.numpy_helper.from_array(colour, weights.name))
    proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 3
    old = tmp_path / "yunet-colour.onnx"
    onnx.save(proto, str(old))
    with pytest.raises(DetectorError, match=r"takes 3 channels.*python -m training.yunet"):
        YuNetDetector(old)


def test_the_setting_chooses_the_detector(make_client):
    with make_client() as client:
        assert isinstance(client.app.state.service.pipeline.detector, YuNetDetector)
    with make_client(face_detector="blazeface") as client:
        assert isinstance(client.app.state.service.pipeline.detector, BlazeFaceDetector)
    with make_client(face_detector="haar") as client:
        assert isinstance(client.app.state.service.pipeline.detector, HaarDetector)
        response = client.post("/predict", files={"file": ("p.jpg", scene_jpeg(640, 480))})
        assert response.status_code == 200 and response.json()["faces_found"] == 1


def test_face_box_is_clipped_to_the_image(any_network, portrait_gray):
    """A face cut by the frame's edge (the portrait's face spans about x 170 to 280) is still
    found, once, and its box ends at the cut instead of running past it."""
    left_gone = portrait_gray[:, 200:]
    (box,) = any_network.detect(left_gone)
    assert isinstance(box, FaceBox)
    assert box.x == 0 and box.width > 0 and box.y >= 0
    assert box.y + box.height <= left_gone.shape[0]
    right_gone = portrait_gray[:, :250]
    (box,) = any_network.detect(right_gone)
    assert box.x > 0 and box.x + box.width == right_gone.shape[1]
    assert box.y >= 0 and box.y + box.height <= right_gone.shape[0]


@pytest.mark.parametrize(
    ("size", "passes"),
    [
        ((640, 480), [320, 128]),
        ((1920, 1080), [320, 128]),
        ((512, 512), [256, 128]),
        ((427, 240), [224, 128]),
        ((256, 256), [128]),
        ((48, 48), [128]),
    ],
)
def test_the_passes_are_sized_to_the_image(detector, size, passes):
    """The largest input sees the detection copy shrunk 2x at most (as a tile does): a small
    photo is not enlarged for it, and the smaller input runs only where it is smaller."""
    width, height = size
    assert detector.pass_sizes(height, width) == passes


@pytest.mark.parametrize("side", [160, 256, 320])
def test_small_portraits_still_show_their_one_face(any_network, portrait_gray, side):
    small = cv2.resize(portrait_gray, (side, side), interpolation=cv2.INTER_AREA)
    (box,) = any_network.detect(small)
    scale = side / 512
    assert abs(centre(box)[0] - FACE_CENTRE[0] * scale) < 10 * scale + 2
    assert abs(centre(box)[1] - FACE_CENTRE[1] * scale) < 10 * scale + 2


@pytest.mark.parametrize("fill", [0.5, 0.7, 0.9])
def test_a_close_up_is_found_by_the_smaller_pass(detector, portrait_gray, fill):
    """A close-up at 640 pixels: the face is `fill` of the frame, too large for the 320 input
    (alone, it finds none of these); the smaller input, which runs beside it, finds it."""
    side = round(106 / fill)  # the portrait's face box is ~106 px
    x, y = FACE_CENTRE
    top, left = max(0, y - side // 2), x - side // 2
    close_up = cv2.resize(
        portrait_gray[top : top + side, left : left + side], (640, 640), cv2.INTER_CUBIC
    )
    assert detector.pass_sizes(640, 640) == [320, 128]
    (box,) = detector.detect(close_up)
    assert abs(centre(box)[0] - 640 * (x - left) / side) < 64
    assert abs(centre(box)[1] - 640 * (y - top) / side) < 64


@pytest.mark.parametrize(("size", "face"), [((320, 240), 48), ((400, 300), 56), ((512, 384), 64)])
def test_several_people_in_a_small_photo_are_each_found(any_network, portrait_gray, size, face):
    """Four heads in a row, each face `face` pixels, in a photo smaller than the 640-pixel copy:
    the smaller passes still see every one of them, and nothing else."""
    x, y = FACE_CENTRE
    head = portrait_gray[y - 110 : y + 110, x - 110 : x + 110]  # the face is ~106 of 220 px
    side = round(220 * face / 106)
    width, height = size
    frame = np.full((height, width), 110, np.uint8)
    centres = []
    for index, left in enumerate(np.linspace(0, width - side, 4).astype(int)):
        top = (height - side) * (index % 2)
        frame[top : top + side, left : left + side] = cv2.resize(
            head, (side, side), interpolation=cv2.INTER_AREA
        )
        centres.append((left + side / 2, top + side / 2))
    boxes = any_network.detect(frame)
    assert len(boxes) == 4
    for cx, cy in centres:
        assert any(
            abs(centre(b)[0] - cx) < face / 2 and abs(centre(b)[1] - cy) < face / 2 for b in boxes
        )


@pytest.mark.parametrize("fill", [0.5, 0.7, 0.9])
def test_yunet_finds_a_close_up_in_one_run(yunet, portrait_gray, fill):
    """A close-up at 640 pixels, the face `fill` of the frame: YuNet's coarsest stride sees
    faces that large in the one run it makes."""
    side = round(106 / fill)  # the portrait's face box is ~106 px
    x, y = FACE_CENTRE
    top, left = max(0, y - side // 2), x - side // 2
    close_up = cv2.resize(
        portrait_gray[top : top + side, left : left + side], (640, 640), cv2.INTER_CUBIC
    )
    (box,) = yunet.detect(close_up)
    assert abs(centre(box)[0] - 640 * (x - left) / side) < 64
    assert abs(centre(box)[1] - 640 * (y - top) / side) < 64


@pytest.mark.parametrize("side", [32, 40, 48])
def test_yunet_sees_a_tight_crop_of_one_face_enlarged(yunet, portrait_gray, side):
    """A small upload of one face (FER2013's own crops are 48x48): the face fills the image, and
    YuNet run at the image's own size misses it (the 32-pixel crops here; a quarter of FER2013's
    crops); run enlarged to MIN_INPUT_SIDE it finds it, its box over most of the image."""
    x, y = FACE_CENTRE
    crop = cv2.resize(portrait_gray[y - 60 : y + 60, x - 60 : x + 60], (side, side), cv2.INTER_AREA)
    (box,) = yunet.detect(crop)
    assert box.width > side * 0.6
    assert abs(centre(box)[0] - side / 2) < side / 6 and abs(centre(box)[1] - side / 2) < side / 6


def test_yunet_finds_the_small_faces_of_a_large_photo_at_a_larger_detection_side(portrait_gray):
    """At the default 640 pixels a 1080p photo's 64-pixel faces are seen at 21 pixels, below
    MIN_FACE_PIXELS; DETECTION_MAX_SIDE 1920 runs the network on the photo itself and finds each
    one, in place, once."""
    frame, centres = group_photo(portrait_gray, face=64)
    assert len(YuNetDetector(DEFAULT_YUNET_PATH, max_side=640).detect(frame)) < 3
    boxes = YuNetDetector(DEFAULT_YUNET_PATH, max_side=1920).detect(frame)
    assert len(boxes) == 3
    for x, y in centres:
        assert any(abs(centre(box)[0] - x) < 12 and abs(centre(box)[1] - y) < 12 for box in boxes)


@pytest.mark.slow
def test_yunet_bounds_the_memory_of_a_large_detection_copy(repo_root):
    """DETECTION_MAX_SIDE 4096: one run on the whole 4096x3072 copy would hold ~610 MB of
    activations; tiles of TILE_SPAN hold that to well under half (measured in a fresh process,
    peak resident memory over its state after loading)."""
    script = (
        "import resource, numpy as np\n"
        "from service.yunet import YuNetDetector\n"
        "from service.settings import DEFAULT_YUNET_PATH\n"
        "detector = YuNetDetector(DEFAULT_YUNET_PATH, max_side=4096, intra_op_threads=1)\n"
        "image = np.random.default_rng(0).integers(0, 256, (3072, 4096), dtype=np.uint8)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "detector.detect(image)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=repo_root, capture_output=True, text=True, check=True
    )
    assert int(result.stdout.split()[-1]) < 350
