"""The bundle on disk: the manifest and its layout, paths and URLs, hashing, durability, the atomic
commit and the integrity checks a reader runs before anything is parsed.

No Keras or TensorFlow at import (``tf.io.gfile`` is imported only for URLs). The format itself
is specified in docs/bundle-format.md and enforced by :mod:`.manifest`.
"""
