"""What training and serving agree on, imported by both halves and nothing else of either.

- `contract.emotion`: the emotion model's contract (labels, input size, pixel scaling, crop
  margin) and the metadata keys an exported model carries it under;
- `contract.detector`: the face detector file's metadata, which the service decodes it by;
- `contract.provenance`: the machine and code version every recorded figure names;
- `contract.runtime`: how onnxruntime runs an emotion model, the same on every x86 CPU.

Pure Python and numpy-free at import, so either half imports it cheaply.
"""
