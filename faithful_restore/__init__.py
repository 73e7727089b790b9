"""faithful_restore: save a Keras model so the restored model is the one that was saved, and prove it."""

# First: an unsupported TensorFlow/Keras fails here, at import, never halfway through a save.
from faithful_restore import _supported  # noqa: F401  (isort: skip)
from faithful_restore._bundle import Bundle, load_bundle, save_bundle
from faithful_restore._compare import compare
from faithful_restore._environment import Environment
from faithful_restore._findings import Cause, Finding, Report
from faithful_restore._guard import Thresholds, check_inputs
from faithful_restore._manager import BundleInfo, BundleManager
from faithful_restore._manifest import FORMAT_VERSION, FileEntry, Manifest, Segment
from faithful_restore._signature import Signature, TensorRecord
from faithful_restore._stats import PreprocessingStats
from faithful_restore._verify import assert_roundtrip, verify_bundle
from faithful_restore.errors import (
    BundleError,
    FaithfulRestoreError,
    InputCheckError,
    IntegrityError,
    PreprocessingWarning,
    RoundtripError,
    UnsupportedEnvironmentError,
    VersionSkewError,
    VersionSkewWarning,
)

__version__ = "0.1.0"

__all__ = [
    "FORMAT_VERSION",
    "Bundle",
    "BundleError",
    "BundleInfo",
    "BundleManager",
    "Cause",
    "Environment",
    "FaithfulRestoreError",
    "FileEntry",
    "Finding",
    "InputCheckError",
    "IntegrityError",
    "Manifest",
    "PreprocessingStats",
    "PreprocessingWarning",
    "Report",
    "RoundtripError",
    "UnsupportedEnvironmentError",
    "Segment",
    "Signature",
    "TensorRecord",
    "Thresholds",
    "VersionSkewError",
    "VersionSkewWarning",
    "__version__",
    "assert_roundtrip",
    "check_inputs",
    "compare",
    "load_bundle",
    "save_bundle",
    "verify_bundle",
]


def __getattr__(name: str) -> object:
    # `faithful_restore.keras` subclasses a Keras callback, so importing it imports TensorFlow;
    # load it on first use to keep `import faithful_restore` light.
    if name == "keras":
        import importlib

        return importlib.import_module("faithful_restore.keras")
    raise AttributeError(f"module 'faithful_restore' has no attribute {name!r}")
