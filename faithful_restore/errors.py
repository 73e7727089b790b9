"""Exceptions and warnings raised by faithful_restore.

Every error derives from :class:`FaithfulRestoreError`. Messages say what was found, what was
expected and how to fix it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "BundleError",
    "FaithfulRestoreError",
    "InputCheckError",
    "IntegrityError",
    "RoundtripError",
    "UnsupportedEnvironmentError",
    "VersionSkewError",
    "VersionSkewWarning",
    "PreprocessingWarning",
]


class FaithfulRestoreError(Exception):
    """Base class of every error raised by faithful_restore."""


class BundleError(FaithfulRestoreError):
    """A bundle cannot be written or read: bad arguments, bad model, bad or hostile files."""


class ArgumentError(BundleError, ValueError):
    """An argument has a value the function cannot take (also a ``ValueError``).

    Deprecated base: it is also a :class:`BundleError` until faithful_restore 0.3, so existing
    ``except BundleError`` clauses keep catching it; catch ``ValueError`` or this class instead.
    """


class ArgumentTypeError(BundleError, TypeError):
    """An argument is of a type the function cannot take (also a ``TypeError``).

    Deprecated base: also a :class:`BundleError` until faithful_restore 0.3, as for
    :class:`ArgumentError`.
    """


class UnsupportedEnvironmentError(FaithfulRestoreError, ImportError):
    """TensorFlow or Keras is older than the range faithful_restore supports (raised at import)."""


class IntegrityError(BundleError):
    """A bundle's files do not match the sizes and SHA-256 digests its manifest records."""


class VersionSkewError(FaithfulRestoreError):
    """The running environment differs from the one that wrote the bundle (``on_version_skew="error"``)."""

    def __init__(self, message: str, differences: Any = ()) -> None:
        super().__init__(message)
        self.differences = tuple(differences)


class RoundtripError(FaithfulRestoreError, AssertionError):
    """A restored model does not behave like the model that was saved.

    ``report`` holds the structured report when one was produced.
    """

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class InputCheckError(FaithfulRestoreError):
    """Inputs the model cannot take, or that are far from what training saw (``Bundle.predict``).

    ``report`` holds the :class:`~faithful_restore.Report` of the input check.
    """

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class PreprocessingWarning(UserWarning):
    """Preprocessing that is probably not what training used (e.g. a Normalization never adapted)."""


class VersionSkewWarning(UserWarning):
    """The running environment differs from the one that wrote the bundle."""
