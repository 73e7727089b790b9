"""Findings and reports: ordering, rendering, JSON round trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import faithful_restore as fr
from faithful_restore import Cause, Finding, Report

findings = st.builds(
    Finding,
    cause=st.sampled_from(list(Cause)),
    severity=st.sampled_from(["error", "warning", "info"]),
    path=st.text(max_size=20),
    expected=st.none() | st.integers() | st.text(max_size=10),
    found=st.none() | st.integers() | st.text(max_size=10),
    message=st.text(max_size=40),
)


@given(st.lists(findings, max_size=12))
def test_ordering_and_json_roundtrip(items):
    report = Report.build(items, ["x"], "subject")
    ranks = [(["error", "warning", "info"].index(f.severity), list(Cause).index(f.cause)) for f in report.findings]
    assert ranks == sorted(ranks)
    assert report.ok == (not any(f.severity == "error" for f in items))
    again = Report.from_dict(json.loads(report.to_json()))
    assert again.findings == report.findings and again.checks == report.checks
    assert report.summary() and report.to_text().startswith("faithful_restore report")


def test_root_cause_comes_first():
    report = Report.build(
        [
            Finding(Cause.OUTPUTS, "info", "outputs", None, None, "explained"),
            Finding(Cause.WEIGHTS, "error", "dense/kernel", 1, 2, "weight differs"),
            Finding(Cause.INPUT_SIGNATURE, "error", "inputs.x", [4], [5], "input changed"),
            Finding(Cause.VERSION_SKEW, "warning", "environment.tensorflow", "2.15", "2.21", "skew"),
        ],
        [],
    )
    assert [f.cause for f in report.findings] == [
        Cause.INPUT_SIGNATURE,
        Cause.WEIGHTS,
        Cause.VERSION_SKEW,
        Cause.OUTPUTS,
    ]
    assert report.causes() == [Cause.INPUT_SIGNATURE, Cause.WEIGHTS]
    assert "Most likely cause: the model's inputs or outputs changed" in report.summary()


def test_bad_severity_and_bad_dict():
    with pytest.raises(ValueError):
        Finding(Cause.WEIGHTS, "fatal", "p", None, None, "m")
    with pytest.raises(fr.BundleError):
        Finding.from_dict({"cause": "nope", "severity": "error", "path": "", "expected": 1, "found": 1, "message": ""})
    with pytest.raises(fr.BundleError):
        Report.from_dict({"findings": "x"})
