"""Emotions over time: video files and live streams, with each face followed as one track.

`decode` turns a container into sampled frames without ever letting FFmpeg open anything the
file names; `tracking` links face boxes from frame to frame and smooths each track's
probabilities; `analysis` runs frames through the one image pipeline (`service.pipeline`) and
the tracker; `encode` writes the answers (JSON, NDJSON, CSV).
"""
