"""Speed patches: every replacement of a private Keras, TensorFlow or h5py method, in one place.

Each patch is performance only (the results are the same without it) and acts only inside the
library's own blocks, on the calling thread. ``FAITHFUL_RESTORE_FAST=0`` (read at every use)
turns them all off and removes any installed earlier; an unexpected library version turns one
off by itself (see :mod:`faithful_restore.fast._patch`).

- :mod:`.deferred_init`: skips initializers a load overwrites anyway (Keras ``Variable``).
- :mod:`.sequential_build`: builds a deserialized ``Sequential`` once, not once per layer.
- :mod:`.save_views`: hands h5py zero-copy views of variables while a bundle is written.
- :mod:`.inline_hash`: hashes large HDF5 datasets while they are written (``h5py.Group``).
- :mod:`.prefetch`: reads each weight byte once at load, hashed, then donated to TensorFlow.
"""

from faithful_restore.fast._patch import ENV, Patch, enabled, patches, uninstall_all

__all__ = ["ENV", "Patch", "enabled", "patches", "uninstall_all"]
