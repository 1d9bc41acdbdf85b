"""`Choice`: the base of the project's string-valued enums (schedules, splits, variances, objectives, samplers).

`Kind.from_value(value)` returns the member for a member or its string and raises the class's error naming the
value and every option otherwise, e.g. "unknown schedule 'cosin'; options are 'linear', 'cosine'" (CONTRIBUTING.md,
"Errors and files"). A subclass names what it chooses with `LABEL` and may raise another ValueError subclass
with `ERROR` (both are classmethods, so that Enum does not take them for members).
"""

from __future__ import annotations

import enum
from typing import TypeVar

_ChoiceT = TypeVar("_ChoiceT", bound="Choice")


class Choice(enum.Enum):
    """A string-valued enum with `from_value` (module docstring)."""

    @classmethod
    def label(cls) -> str:
        """What the enum chooses, as the error message says it (default: the class name in lower case)."""
        return cls.__name__.lower()

    @classmethod
    def error(cls) -> type[ValueError]:
        """The exception `from_value` raises for an unknown value."""
        return ValueError

    @classmethod
    def from_value(cls: type[_ChoiceT], value: object) -> _ChoiceT:
        """The member for `value` (a member or its string); the class's error naming the options otherwise."""
        if isinstance(value, cls):
            return value
        for member in cls:
            if value == member.value:
                return member
        options = ", ".join(repr(m.value) for m in cls)
        raise cls.error()(f"unknown {cls.label()} {value!r}; options are {options}")


__all__ = ["Choice"]
