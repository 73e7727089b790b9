"""faithful_restore: save a Keras model so the restored model is the one that was saved, and prove it."""

# First: an unsupported TensorFlow/Keras fails here, at import, never halfway through a save.
from faithful_restore.runtime import supported as _supported  # noqa: F401  (isort: skip)
from faithful_restore._version import __version__
from faithful_restore.bundle.load import load_bundle
from faithful_restore.bundle.manager import BundleInfo, BundleManager
from faithful_restore.bundle.save import save_bundle
from faithful_restore.bundle.types import Bundle
from faithful_restore.diagnose.compare import compare
from faithful_restore.diagnose.inputs import check_inputs
from faithful_restore.diagnose.verify import assert_roundtrip, verify_bundle
from faithful_restore.drift.guard import Thresholds
from faithful_restore.drift.stats import PreprocessingStats
from faithful_restore.errors import (
    ArgumentError,
    ArgumentTypeError,
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
from faithful_restore.findings import Cause, Finding, Report
from faithful_restore.format.integrity import read_manifest
from faithful_restore.format.manifest import FORMAT_VERSION, FileEntry, Manifest, Segment
from faithful_restore.format.records import Environment, Signature, TensorRecord

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
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
    "read_manifest",
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
