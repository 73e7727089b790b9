"""Findings and reports: what differs between a saved and a restored model, and why."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from faithful_restore.errors import ArgumentError, BundleError


class Cause(str, enum.Enum):
    """Why a restored model is not the model that was saved."""

    INTEGRITY = "integrity"
    VERSION_SKEW = "version_skew"
    INPUT_SIGNATURE = "input_signature"
    ARCHITECTURE = "architecture"
    PREPROCESSING = "preprocessing"
    REGULARIZATION = "regularization"
    REPLICA_DIVERGENCE = "replica_divergence"
    WEIGHTS = "weights"
    OPTIMIZER_STATE = "optimizer_state"
    TRAINING_STATE = "training_state"
    OUTPUTS = "outputs"


# Most likely root cause first: a cause earlier in this list usually explains the later ones
# (a changed input shape changes kernel shapes, which changes outputs, and so on).
CAUSE_ORDER = tuple(Cause)

CAUSE_TITLES = {
    Cause.INTEGRITY: "the bundle's files are damaged or were modified",
    Cause.VERSION_SKEW: "TensorFlow/Keras/Python/NumPy differ between save and load",
    Cause.INPUT_SIGNATURE: "the model's inputs or outputs changed shape or dtype",
    Cause.ARCHITECTURE: "the rebuilt model's layers differ",
    Cause.PREPROCESSING: "preprocessing statistics or vocabularies differ",
    Cause.REGULARIZATION: "dropout, regularizer or normalization settings (or the layers' mode) differ",
    Cause.REPLICA_DIVERGENCE: "replicas of a distributed model hold different values",
    Cause.WEIGHTS: "weights differ",
    Cause.OPTIMIZER_STATE: "the optimizer state was not restored",
    Cause.TRAINING_STATE: "training state (step counters, random generators, data position) differs",
    Cause.OUTPUTS: "outputs differ and nothing else explains it",
}

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """One difference between an original and a restored model.

    Attributes:
        cause: the :class:`Cause`.
        severity: "error" (not the same model), "warning" (may differ), or "info".
        path: the layer, variable, file or setting concerned.
        expected: what the original has (JSON value).
        found: what the restored model has (JSON value).
        message: one plain sentence with the fix.
    """

    cause: Cause
    severity: str
    path: str
    expected: Any
    found: Any
    message: str

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ArgumentError(f"severity must be one of {SEVERITIES}, found {self.severity!r}.")

    def to_dict(self) -> dict[str, Any]:
        return {
            "cause": self.cause.value,
            "severity": self.severity,
            "path": self.path,
            "expected": self.expected,
            "found": self.found,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Finding:
        keys = {"cause", "severity", "path", "expected", "found", "message"}
        if not isinstance(data, dict) or set(data) != keys:
            raise BundleError(f"a finding must have exactly {sorted(keys)}, found {data!r}.")
        try:
            cause = Cause(data["cause"])
        except ValueError as e:
            raise BundleError(f"unknown finding cause {data['cause']!r}.") from e
        if data["severity"] not in SEVERITIES:
            raise BundleError(f"unknown finding severity {data['severity']!r}.")
        return cls(cause, data["severity"], str(data["path"]), data["expected"], data["found"], str(data["message"]))

    def line(self) -> str:
        return f"[{self.severity}] {self.cause.value} @ {self.path}: {self.message}"


def _rank(finding: Finding) -> tuple[int, int]:
    return (SEVERITIES.index(finding.severity), CAUSE_ORDER.index(finding.cause))


@dataclass(frozen=True)
class Report:
    """The result of a comparison or verification.

    Attributes:
        findings: most likely cause first (errors before warnings before info).
        checks: what was checked, one short phrase each.
        subject: what was compared or verified.
    """

    findings: tuple[Finding, ...]
    checks: tuple[str, ...] = field(default=())
    subject: str = ""
    kind: str = "roundtrip"  # or "inputs" for check_inputs reports

    @classmethod
    def build(cls, findings: list[Finding], checks: list[str], subject: str = "", kind: str = "roundtrip") -> Report:
        return cls(tuple(sorted(findings, key=_rank)), tuple(checks), subject, kind)

    @property
    def ok(self) -> bool:
        """True when no finding has severity "error"."""
        return not any(f.severity == "error" for f in self.findings)

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    def causes(self) -> list[Cause]:
        """Distinct causes of error findings, most likely first."""
        out: list[Cause] = []
        for f in self.errors:
            if f.cause not in out:
                out.append(f.cause)
        return out

    def summary(self) -> str:
        """One paragraph that answers "why isn't my restored model the one I saved?"."""
        checked = ", ".join(self.checks) if self.checks else "nothing"
        if self.kind == "inputs":
            return self._inputs_summary(checked)
        if self.ok:
            warnings = [f for f in self.findings if f.severity == "warning"]
            text = f"The restored model matches the original. Checked: {checked}."
            if warnings:
                text += " Warnings: " + " ".join(f.message for f in warnings[:3])
            return text
        causes = self.causes()
        first = self.errors[0]
        text = (
            f"The restored model is not the model that was saved. Most likely cause: "
            f"{CAUSE_TITLES[causes[0]]} ({first.path}): {first.message}"
        )
        if len(causes) > 1:
            text += " Also: " + "; ".join(CAUSE_TITLES[c] for c in causes[1:]) + "."
        computed_same = not any(f.cause is Cause.OUTPUTS for f in self.errors) and any(
            c.startswith("inference outputs") for c in self.checks
        )
        if computed_same and set(causes) <= {Cause.OPTIMIZER_STATE, Cause.TRAINING_STATE}:
            text += (
                " Inference is unaffected (outputs are identical); what differs is how training continues from here."
            )
        return text

    def _inputs_summary(self, checked: str) -> str:
        problems = [f for f in self.findings if f.severity in ("error", "warning")]
        if not problems:
            return f"The inputs look like what the model saw in training. Checked: {checked}."
        worst = "are unusable or far" if not self.ok else "differ"
        first = problems[0]
        return (
            f"The inputs {worst} from what the model saw in training ({len(problems)} problem(s)). "
            f"First: {first.path}: {first.message}"
        )

    def to_text(self) -> str:
        """A readable report: the summary, then every finding as 'cause @ path' lines."""
        lines = [f"faithful_restore report{': ' + self.subject if self.subject else ''}", self.summary()]
        if self.findings:
            lines.append("")
            lines.append("Findings (most likely cause first):")
            for f in self.findings:
                lines.append("  " + f.line())
                if f.severity != "info" and (f.expected is not None or f.found is not None):
                    lines.append(f"      expected: {_short(f.expected)}")
                    lines.append(f"      found:    {_short(f.found)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "kind": self.kind,
            "ok": self.ok,
            "summary": self.summary(),
            "checks": list(self.checks),
            "findings": [f.to_dict() for f in self.findings],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, data: Any) -> Report:
        if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
            raise BundleError("a report must be an object with a 'findings' list.")
        return cls(
            tuple(Finding.from_dict(f) for f in data["findings"]),
            tuple(str(c) for c in data.get("checks", [])),
            str(data.get("subject", "")),
            str(data.get("kind", "roundtrip")),
        )


def integrity_report(path: str, error: Exception, subject: str = "") -> Report:
    """The report for a bundle whose files do not match its manifest (nothing else is checked)."""
    finding = Finding(Cause.INTEGRITY, "error", path, "files matching the manifest", str(error), str(error))
    return Report.build([finding], ["file integrity"], subject or path)


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."
