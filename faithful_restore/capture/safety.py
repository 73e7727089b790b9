"""Refuses model configs that would run code from a bundle or import arbitrary modules.

Keras' ``safe_mode`` is a filter, not a sandbox (see the Keras loading CVEs), so configs are
scanned before Keras sees them: Lambda layers and serialized Python functions are refused under
``safe_mode``, and every class must be a Keras class or one the running program registered or
passed in ``custom_objects``; nothing is resolved by importing a module named in the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faithful_restore.errors import BundleError

_MAX_DEPTH = 200
_KERAS_PACKAGES = ("keras", "keras_hub", "keras_nlp", "keras_cv")
_CODE_CLASSES = ("__lambda__",)
# Keras' markers for plain data (tensors, arrays, slices...), which it decodes without imports.
_DATA_CLASSES = (
    "__bytes__",
    "__ellipsis__",
    "__keras_tensor__",
    "__numpy__",
    "__slice__",
    "__tensor__",
    "__typespec__",
)


def _is_keras_module(module: Any) -> bool:
    return isinstance(module, str) and module.split(".", 1)[0] in _KERAS_PACKAGES


def _resolvable(name: Any, custom_objects: Mapping[str, Any] | None) -> bool:
    import keras

    if not isinstance(name, str):
        return False
    if custom_objects and name in custom_objects:
        return True
    return keras.saving.get_registered_object(name) is not None


def scan(config: Any, *, safe_mode: bool, custom_objects: Mapping[str, Any] | None, where: str) -> None:
    """Raises BundleError for code or unknown classes anywhere in a Keras config tree.

    Args:
        config: the parsed ``config.json`` (or any part of it).
        safe_mode: refuse Lambda layers and serialized Python functions.
        custom_objects: names the caller allows besides Keras' own and registered classes.
        where: what the config is, for messages.
    """

    def walk(node: Any, path: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise BundleError(f"{where}: the config nests deeper than {_MAX_DEPTH} levels at {path}; refusing it.")
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]", depth + 1)
            return
        if not isinstance(node, dict):
            return
        cls = node.get("class_name")
        if isinstance(cls, str):
            name = (node.get("config") or {}).get("name") if isinstance(node.get("config"), dict) else None
            label = f"{cls}" + (f" {name!r}" if name else "") + f" at {path or 'the top'}"
            module = node.get("module")
            registered = node.get("registered_name")
            if safe_mode and (cls in _CODE_CLASSES or (cls == "Lambda" and _is_keras_module(module))):
                raise BundleError(
                    f"{where}: {label} stores Python code, which safe_mode=True never executes. "
                    "Replace the Lambda with a registered custom layer, or, only for a bundle you "
                    "trust, load with safe_mode=False."
                )
            known = _is_keras_module(module) or module == "builtins" or cls in _CODE_CLASSES + _DATA_CLASSES
            if not known and not (_resolvable(registered, custom_objects) or _resolvable(cls, custom_objects)):
                raise BundleError(
                    f"{where}: {label} is class {registered or cls!r} from module {module!r}, which "
                    "is neither a Keras class nor registered. Decorate it with "
                    "@keras.saving.register_keras_serializable() in code imported before loading, "
                    "or pass custom_objects={'" + str(registered or cls) + "': TheClass}. "
                    "faithful_restore never imports modules named in a bundle."
                )
        for key, value in node.items():
            walk(value, f"{path}.{key}" if path else str(key), depth + 1)

    walk(config, "", 0)


def scan_h5(path: str, where: str) -> None:
    """Raises BundleError if an HDF5 file links or maps data outside itself.

    External links, external dataset storage and virtual datasets make HDF5 read other files;
    a bundle's weights must come from the bundle's own (hashed) bytes only.
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise BundleError(f"{where} is not a readable HDF5 file ({e}); the bundle is damaged.") from e
    with f:
        stack: list[tuple[Any, str]] = [(f, "")]
        while stack:
            group, prefix = stack.pop()
            for name in group:
                link = group.get(name, getlink=True)
                path_in = f"{prefix}/{name}"
                if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
                    raise BundleError(
                        f"{where}: {path_in} is an HDF5 {type(link).__name__}; a bundle never links outside "
                        "its own data. Refusing it; re-create the bundle with save_bundle."
                    )
                item = group.get(name)
                if isinstance(item, h5py.Group):
                    stack.append((item, path_in))
                elif isinstance(item, h5py.Dataset) and (item.external or item.is_virtual):
                    raise BundleError(
                        f"{where}: dataset {path_in} stores its data in other files (external or "
                        "virtual storage); refusing it. Re-create the bundle with save_bundle."
                    )
