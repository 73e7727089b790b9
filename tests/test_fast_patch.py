"""The speed-patch mechanism: one switch, signature checks, passthrough and clean removal."""

from __future__ import annotations

import inspect

import h5py
import keras
import pytest

from faithful_restore import fast
from faithful_restore.fast import _patch, deferred_init, inline_hash, prefetch, save_views, sequential_build
from faithful_restore.fast._patch import Patch, Target, wrapper_of

ALL = [deferred_init.PATCH, sequential_build.PATCH, save_views.PATCH, inline_hash.PATCH, prefetch.PATCH]


def _adding_one(original):
    def value(self, *args, **kwargs):
        return original(self, *args, **kwargs) + 1

    return wrapper_of(original, value)


def _tagging(function):
    def make(cls, *args, **kwargs):
        return ("tagged", function(cls, *args, **kwargs))

    return wrapper_of(function, make)


def _owner():
    class Owner:
        def value(self, x, scale=1):
            """Doc."""
            return x * scale

        @classmethod
        def make(cls, config):
            return (cls, config)

    return Owner


def test_a_patch_installs_passes_arguments_through_and_uninstalls(monkeypatch):
    monkeypatch.delenv(fast.ENV, raising=False)
    Owner = _owner()
    original = Owner.__dict__["value"]
    patch = Patch("t1", lambda: [Target(Owner, "value", ("self", "x", "scale"), _adding_one)])
    assert patch.active()
    assert Owner().value(2, scale=3) == 7  # keyword arguments reach the original
    assert Owner.value.__name__ == "value" and Owner.value.__doc__ == "Doc."
    assert list(inspect.signature(Owner.value).parameters) == ["self", "x", "scale"]
    assert Owner.value.__wrapped__ is original
    patch.uninstall()
    assert Owner.__dict__["value"] is original


def test_an_unexpected_signature_keeps_the_patch_off(monkeypatch, caplog):
    monkeypatch.delenv(fast.ENV, raising=False)
    Owner = _owner()
    patch = Patch("t2", lambda: [Target(Owner, "value", ("self", "x"), _adding_one)])
    with caplog.at_level("DEBUG", logger="faithful_restore.fast"):
        assert not patch.active()
    assert "expected ('self', 'x')" in caplog.text
    assert Owner().value(2) == 2 and "__wrapped__" not in vars(Owner.value)


def test_all_or_nothing_when_one_target_is_missing(monkeypatch):
    monkeypatch.delenv(fast.ENV, raising=False)
    Owner = _owner()
    patch = Patch(
        "t3",
        lambda: [
            Target(Owner, "value", ("self", "x", "scale"), _adding_one),
            Target(Owner, "missing", ("self",), _adding_one),
        ],
    )
    assert not patch.available() and not patch.active()
    assert Owner().value(2) == 2


def test_a_failing_import_keeps_the_patch_off(monkeypatch):
    monkeypatch.delenv(fast.ENV, raising=False)

    def targets():
        raise ImportError("no such Keras module")

    assert not Patch("t4", targets).active()


def test_classmethods_stay_classmethods_and_are_restored(monkeypatch):
    monkeypatch.delenv(fast.ENV, raising=False)
    Owner = _owner()
    raw = Owner.__dict__["make"]

    patch = Patch("t5", lambda: [Target(Owner, "make", ("config",), _tagging)])
    assert patch.active()
    assert Owner.make(1) == ("tagged", (Owner, 1))
    patch.uninstall()
    assert Owner.__dict__["make"] is raw and Owner.make(1) == (Owner, 1)


def test_an_inherited_method_is_removed_again_not_copied_down(monkeypatch):
    monkeypatch.delenv(fast.ENV, raising=False)
    Base = _owner()

    class Child(Base):
        pass

    patch = Patch("t6", lambda: [Target(Child, "value", ("self", "x", "scale"), _adding_one)])
    assert patch.active() and Child().value(1) == 2
    patch.uninstall()
    assert "value" not in Child.__dict__ and Child().value(1) == 1


@pytest.mark.parametrize("off", ["0", "false", "off", "no"])
def test_the_switch_is_read_at_use_and_removes_installed_patches(monkeypatch, off):
    monkeypatch.delenv(fast.ENV, raising=False)
    Owner = _owner()
    patch = Patch("t7", lambda: [Target(Owner, "value", ("self", "x", "scale"), _adding_one)])
    assert patch.active()
    monkeypatch.setenv(fast.ENV, off)
    assert not fast.enabled() and not patch.active()
    assert "__wrapped__" not in vars(Owner.__dict__["value"])


def _third_party_attributes():
    from keras.src import backend
    from keras.src.backend.tensorflow.core import Variable
    from keras.src.models.sequential import Sequential
    from keras.src.optimizers.base_optimizer import BaseOptimizer
    from keras.src.saving import saving_lib

    owners = [Variable, Sequential, BaseOptimizer, h5py.Group, backend]
    owners += [getattr(saving_lib, n) for n in ("H5IOStore", "H5Entry") if hasattr(saving_lib, n)]
    # __annotations__ is created lazily by Python itself when something inspects a class.
    return {(id(o), k): v for o in owners for k, v in vars(o).items() if k != "__annotations__"}


def test_switch_off_leaves_keras_tensorflow_and_h5py_untouched(monkeypatch, tmp_path, trained_sequential, xy):
    import faithful_restore as fr

    monkeypatch.setenv(fast.ENV, "0")
    fast.uninstall_all()
    before = _third_party_attributes()
    fr.save_bundle(trained_sequential, tmp_path / "b", sample_inputs=xy[0][:8])
    bundle = fr.load_bundle(tmp_path / "b")
    assert fr.compare(trained_sequential, bundle, sample_inputs=xy[0][:8]).ok
    after = _third_party_attributes()
    assert sorted(set(before) ^ set(after)) == []
    assert [k for k in before if before[k] is not after[k]] == []
    assert not any(p.installed() for p in _patch.patches())


def test_every_patch_is_available_on_keras_3_10_and_later():
    # Fails loudly when a new Keras changes a private symbol a patch relies on: the patch would
    # stay off silently (results stay right, speed is lost), so this is where we hear of it.
    version = tuple(int(p) for p in keras.__version__.split(".")[:2])
    if version < (3, 10):
        pytest.skip(f"Keras {keras.__version__}: some patches are expected off")
    assert [p.name for p in ALL if not p.available()] == []


def test_which_patches_each_keras_gets():
    version = tuple(int(p) for p in keras.__version__.split(".")[:2])
    assert save_views.PATCH.available() and inline_hash.PATCH.available() and prefetch.PATCH.available()
    assert sequential_build.PATCH.available() == (version >= (3, 5))
    assert deferred_init.PATCH.available() == (version >= (3, 5))


def test_an_inherited_classmethod_stays_a_classmethod(monkeypatch):
    monkeypatch.delenv(fast.ENV, raising=False)
    Base = _owner()

    class Child(Base):
        pass

    patch = Patch("t8", lambda: [Target(Child, "make", ("config",), _tagging)])
    assert patch.active()
    assert Child.make(1) == ("tagged", (Child, 1)) and Child().make(2) == ("tagged", (Child, 2))
    patch.uninstall()
    assert "make" not in Child.__dict__ and Child.make(1) == (Child, 1)
