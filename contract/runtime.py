"""How an emotion model file is run, so that it answers the same on every x86 CPU.

Its int8 layers are fused by onnxruntime into U8S8 kernels. On x86 CPUs without VNNI (AVX2,
and AVX-512 without VNNI: AMD EPYC before Zen 4, Intel before Ice Lake) those kernels add
pairs of 8-bit products in 16-bit registers, which saturate: the same file answered differently
there. Measured on an AVX2 EPYC on the 2,644 unseen validation faces: the shipped ensemble
0.7107 instead of 0.7141, its strongest member 0.6804 instead of 0.6989 (docs/experiments.md,
"int8 on CPUs without VNNI"). `session.x64quantprecision` makes onnxruntime use U8U8 kernels
there, which cannot overflow; CPUs with VNNI run as before.

Training scores, quantises and builds ensembles through these options too: what it measures is
what the service answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnxruntime

PRECISE_INT8 = ("session.x64quantprecision", "1")
"""onnxruntime's session config entry for int8 kernels that cannot overflow on any x86 CPU."""


def model_session_options() -> onnxruntime.SessionOptions:
    """Fresh options for a session that runs an emotion model; the caller adds its threads."""
    import onnxruntime as ort  # deferred: a JAX training machine need not have it

    options = ort.SessionOptions()
    options.add_session_config_entry(*PRECISE_INT8)
    return options
