"""faithful_restore: save a Keras model so the restored model is the one that was saved, and prove it."""

from faithful_restore._bundle import Bundle, load_bundle, save_bundle
from faithful_restore._compare import compare
from faithful_restore._environment import Environment
from faithful_restore._findings import Cause, Finding, Report
from faithful_restore._manifest import FORMAT_VERSION, FileEntry, Manifest
from faithful_restore._signature import Signature, TensorRecord
from faithful_restore._verify import assert_roundtrip, verify_bundle
from faithful_restore.errors import (
    BundleError,
    FaithfulRestoreError,
    IntegrityError,
    RoundtripError,
    VersionSkewError,
    VersionSkewWarning,
)

__version__ = "0.1.0"

__all__ = [
    "FORMAT_VERSION",
    "Bundle",
    "BundleError",
    "Cause",
    "Environment",
    "FaithfulRestoreError",
    "FileEntry",
    "Finding",
    "IntegrityError",
    "Manifest",
    "Report",
    "RoundtripError",
    "Signature",
    "TensorRecord",
    "VersionSkewError",
    "VersionSkewWarning",
    "__version__",
    "assert_roundtrip",
    "compare",
    "load_bundle",
    "save_bundle",
    "verify_bundle",
]
