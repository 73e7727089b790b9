"""Where things live inside a bundle directory (see docs/bundle-format.md)."""

from __future__ import annotations

MODEL_DIR = "model"
MODEL_WEIGHTS = f"{MODEL_DIR}/model.weights.h5"
MODEL_CONFIG = f"{MODEL_DIR}/config.json"
# Keras' own metadata: its version and the save date. The date is the one volatile byte range of
# a bundle besides the manifest's ``created``; neither counts in Manifest.content_digest.
MODEL_METADATA = f"{MODEL_DIR}/metadata.json"
OPTIMIZER_FILE = "optimizer.weights.h5"
STATE_PREFIX = "state/ckpt"
