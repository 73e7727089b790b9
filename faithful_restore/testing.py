"""Test helpers: make "the restored model is the saved model" one line in a user's test suite.

Usage::

    from faithful_restore.testing import assert_roundtrip

    def test_model_survives_save_and_load():
        assert_roundtrip(build_and_train_model())

With pytest, the ``faithful_roundtrip`` fixture (registered as a pytest plugin when
faithful_restore is installed) writes its bundles under the test's ``tmp_path``::

    def test_model_survives(faithful_roundtrip):
        report = faithful_roundtrip(model, sample_inputs=x[:16])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faithful_restore.diagnose.verify import assert_roundtrip
from faithful_restore.findings import Report

__all__ = ["assert_roundtrip", "faithful_roundtrip"]

try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the fixture
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def faithful_roundtrip(tmp_path: Any) -> Callable[..., Report]:
        """Returns ``check(model, sample_inputs=None, **kwargs)``, which raises RoundtripError
        (an AssertionError) with a readable report unless the model round-trips faithfully."""
        counter = iter(range(1_000_000))

        def check(model: Any, sample_inputs: Any = None, **kwargs: Any) -> Report:
            kwargs.setdefault("path", tmp_path / f"faithful_roundtrip_{next(counter)}")
            return assert_roundtrip(model, sample_inputs=sample_inputs, **kwargs)

        return check
