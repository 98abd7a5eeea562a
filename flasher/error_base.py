"""FlasherError, the base of every error the core reports, and its details codec: the typed
attributes an error declares in `detail_names` become JSON-ready `details` in `to_dict()`, and
`from_details()` rebuilds the error from them. Also the process exit codes.

Imports only the standard library and flasher.error_codes (the root writer helper uses it). The
error tree itself is flasher.errors, which re-exports everything here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from flasher.error_codes import Action, DriveProblem, ErrorCode, ProblemCode

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_VERIFY = 3
EXIT_DRIVE = 4
EXIT_CANCELLED = 130


class FlasherError(Exception):
    """Base of every error Flasher reports to a person or a script."""

    code: ClassVar[ErrorCode] = ErrorCode.ERROR
    exit_code: ClassVar[int] = EXIT_ERROR
    detail_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, message: str, *, hint: str | None = None, action: Action | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.action = action

    def details(self) -> dict[str, Any]:
        """The typed attributes that are set, JSON-ready, keyed by their names."""
        out: dict[str, Any] = {}
        for name in self.detail_names:
            value = getattr(self, name)
            if value is not None and value != ():
                out[name] = _plain(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: code, message, hint and the typed details."""
        out: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        details = self.details()
        if details:
            out["details"] = details
        return out

    @classmethod
    def from_details(
        cls,
        message: str,
        *,
        hint: str | None,
        action: Action | None,
        details: Mapping[str, Any],
    ) -> Self:
        """The error `to_dict()` described; ValueError on a detail it does not declare."""
        unknown = set(details) - set(cls.detail_names)
        if unknown:
            raise ValueError(f"unknown details for {cls.code}: {sorted(unknown)}")
        err = cls.__new__(cls)
        FlasherError.__init__(err, message, hint=hint, action=action)
        for name in cls.detail_names:
            setattr(err, name, _decode(name, details.get(name)))
        return err

    def __str__(self) -> str:
        return self.message


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, DriveProblem):
        return value.to_dict()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _decode(name: str, value: Any) -> Any:
    if value is None:
        return () if name in _TUPLE_DETAILS else None
    if name == "problem":
        return ProblemCode(value)
    if name == "problems":
        return tuple(DriveProblem.from_dict(p) for p in value)
    if isinstance(value, list):
        return tuple(value)
    return value


_TUPLE_DETAILS = frozenset({"problems", "tried"})
