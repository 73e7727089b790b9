"""load_bundle: read a consistent view, check every file, rebuild, then prove the probe.

A writer may replace the bundle while it is read (an atomic swap of directories); the load is
optimistic and starts again when the manifest changed underneath (:func:`retrying`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

from faithful_restore.bundle.restore import _background_hashing, _can_overlap, read_probe, restore
from faithful_restore.bundle.types import Bundle, LoadOptions
from faithful_restore.capture import environment as _environment
from faithful_restore.capture import probe as _probe
from faithful_restore.errors import (
    FaithfulRestoreError,
    RoundtripError,
    VersionSkewError,
    VersionSkewWarning,
)
from faithful_restore.fast import prefetch as _prefetch
from faithful_restore.format import paths as _paths
from faithful_restore.format.integrity import consistent_view, read_manifest, retrying, verified_copy, verify_files
from faithful_restore.format.layout import MODEL_CONFIG
from faithful_restore.format.manifest import (
    Manifest,
)


def check_environment(manifest: Manifest, on_version_skew: str) -> list[tuple[str, Any, Any]]:
    diffs = _environment.differences(manifest.environment, _environment.current())
    if diffs and on_version_skew != "ignore":
        text = (
            "the bundle was written in a different environment: "
            + _environment.describe(diffs)
            + ". Results may differ by rounding or the model may not load; install the saved "
            "versions to reproduce exactly, or pass on_version_skew='ignore'."
        )
        if on_version_skew == "error":
            raise VersionSkewError(text, diffs)
        warnings.warn(text, VersionSkewWarning, stacklevel=3)
    return diffs


_UNSET: Any = object()


def load_bundle(
    path: str | os.PathLike[str],
    *,
    custom_objects: Mapping[str, Any] | None = None,
    compile: bool = True,
    safe_mode: bool = True,
    on_version_skew: str = "warn",
    check_probe: bool = True,
    state: Mapping[str, Any] | None = None,
    verbose: bool | str = "auto",
    verify: bool = _UNSET,
) -> Bundle:
    """Loads a bundle after checking every file against the manifest.

    Every byte is hashed and compared with the manifest before it is parsed, whatever the options.

    Args:
        path: the bundle directory (local path or ``tf.io.gfile`` URL).
        custom_objects: custom classes/functions by name, as for ``keras.models.load_model``.
        compile: compile the model as it was saved; the optimizer is restored either way.
        safe_mode: refuse bundles that store Python code (Lambda layers).
        on_version_skew: "warn" (VersionSkewWarning), "error" (VersionSkewError) or "ignore".
        check_probe: re-run the stored probe and raise when outputs moved beyond the tolerance.
        state: names to trackables to restore in place (a subset of what was saved).
        verbose: show progress while checking large bundles: "auto" (when stderr is a
            terminal), True or False.
        verify: deprecated name of ``check_probe`` (it never controlled the integrity check).

    Returns:
        A :class:`Bundle`.

    Raises:
        ArgumentError, ArgumentTypeError: an argument the load cannot take (also ValueError / TypeError).
        BundleError: not a bundle, a malformed manifest, refused content or a failed rebuild.
        IntegrityError: a file differs from the manifest (checked before anything is loaded).
        VersionSkewError: the environment differs and ``on_version_skew="error"``.
        RoundtripError: ``check_probe=True`` and the restored model's outputs differ.
    """
    if verify is not _UNSET:
        warnings.warn(
            "load_bundle(verify=...) is deprecated and will be removed in faithful_restore 0.3: it only ever "
            "controlled the probe re-run (every file is always hashed); pass check_probe= instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        check_probe = verify
    root = _paths.as_path(path)
    options = LoadOptions(custom_objects, compile, safe_mode, on_version_skew, check_probe, state or {}, verbose)
    return load(root, options)


def load(root: str, options: LoadOptions) -> Bundle:
    """:func:`load_bundle` with checked options; retried while a writer replaces the bundle."""
    return retrying(root, lambda: _load_once(root, options), "loaded")


def _load_once(root: str, options: LoadOptions) -> tuple[Bundle, bool]:
    """One load attempt; also says whether it read a pinned snapshot (immune to writers)."""
    with consistent_view(root) as view:
        manifest = read_manifest(view, label=root)
        bundle = _load_verified(root, view, manifest, options)
    return bundle, view != root


def _load_verified(root: str, view: str, manifest: Manifest, options: LoadOptions) -> Bundle:
    if _can_overlap(view, manifest):
        # The listing and the config are verified first; the rest is hashed while Keras builds.
        verify_files(view, manifest, label=root, verbose=False, only=[MODEL_CONFIG])
        buffers = _prefetch.Buffers()
        with _background_hashing(view, manifest, root, options.verbose, buffers) as weights_verified:
            try:
                diffs = check_environment(manifest, options.on_version_skew)
                bundle = restore(root, view, manifest, options, weights_verified, buffers)
            except FaithfulRestoreError:
                weights_verified()  # a damaged file explains any failure after it: report that first
                raise
        return _checked_probe(root, view, manifest, bundle, diffs, options.check_probe)
    with verified_copy(view, manifest, label=root, verbose=options.verbose) as files_root:
        diffs = check_environment(manifest, options.on_version_skew)
        bundle = restore(root, files_root, manifest, options)
        return _checked_probe(root, files_root, manifest, bundle, diffs, options.check_probe)


def _checked_probe(
    root: str, files_root: str, manifest: Manifest, bundle: Bundle, diffs: list[Any], check_probe: bool
) -> Bundle:
    """Re-runs the stored probe (with ``check_probe``); raises RoundtripError when outputs moved."""
    if check_probe and manifest.probe is not None:
        problems = _probe.check(
            bundle.model, manifest.probe, read_probe(files_root, manifest), same_environment=not diffs
        )
        if problems:
            raise RoundtripError(
                f"the model restored from {root!r} does not compute what the saved model "
                f"computed on the stored probe: {'; '.join(problems)}. "
                + ("The environment differs (" + _environment.describe(diffs) + "); " if diffs else "")
                + "run faithful_restore.verify_bundle for a diagnosis."
            )
    return bundle
