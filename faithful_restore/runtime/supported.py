"""The TensorFlow and Keras versions faithful_restore supports, checked once at import.

The floor is the oldest pair the CI tests (TensorFlow 2.16 with Keras 3.3). No upper bound: a
newer release is not known to break anything, and the speed patches switch themselves off when a
private symbol they rely on changes. Checked from package metadata, so nothing is imported here.
"""

from __future__ import annotations

import re
from importlib import metadata

from faithful_restore.errors import UnsupportedEnvironmentError

MIN_TENSORFLOW = (2, 16)
MIN_KERAS = (3, 3)
_TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos", "tf-nightly")


def _version(distributions: tuple[str, ...]) -> str | None:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def parse(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def check(tensorflow: str | None = None, keras: str | None = None) -> None:
    """Raises :class:`UnsupportedEnvironmentError` for a TensorFlow or Keras below the floor.

    Arguments default to the installed versions; a package without metadata is not judged here
    (its import will say more than we can).
    """
    tensorflow = tensorflow if tensorflow is not None else _version(_TENSORFLOW_DISTRIBUTIONS)
    keras = keras if keras is not None else _version(("keras",))
    problems = []
    if tensorflow is not None and parse(tensorflow) < MIN_TENSORFLOW:
        problems.append(f"TensorFlow {tensorflow} (needs >= {'.'.join(map(str, MIN_TENSORFLOW))})")
    if keras is not None and parse(keras) < MIN_KERAS:
        problems.append(f"Keras {keras} (needs >= {'.'.join(map(str, MIN_KERAS))})")
    if problems:
        raise UnsupportedEnvironmentError(
            f"faithful_restore does not support {' and '.join(problems)}. Upgrade them, e.g. "
            '`pip install "tensorflow>=2.16" "keras>=3.3"`, or pin an older faithful_restore.'
        )


check()
