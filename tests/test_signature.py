"""Signatures of functional, sequential and subclassed models."""

from __future__ import annotations

import numpy as np
from conftest import functional_multi_io, subclassed_model

from faithful_restore import Signature
from faithful_restore.capture import signature as _signature


def test_functional_multi_io_signature():
    model, _ = functional_multi_io(trained=False)
    sig = _signature.of_model(model)
    assert [(t.name, t.shape, t.dtype) for t in sig.inputs] == [
        ("a", (None, 3), "float32"),
        ("b", (None, 5), "float32"),
    ]
    assert {t.shape for t in sig.outputs} == {(None, 1), (None, 3)}
    assert Signature.from_dict(sig.to_dict()) == sig


def test_subclassed_signature_from_sample_inputs_and_build_config():
    model = subclassed_model(trained=False)
    x = np.ones((3, 4), "float32")
    sig = _signature.of_model(model, x, [model(x)])
    assert sig.inputs[0].shape == (None, 4) and sig.outputs[0].shape == (None, 1)
    assert _signature.of_model(model).inputs[0].shape[-1] == 4
