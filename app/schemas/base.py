from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator


class Schema(BaseModel):
    """Base of every API schema: reads ORM objects, and refuses NUL characters (PostgreSQL cannot
    store them, so they would otherwise turn into a 500 far from the input that caused it)."""

    model_config = ConfigDict(from_attributes=True)
    # An answer (`...Out`) is built here from stored or computed values, so only what comes in can hold
    # a NUL: walking every answer's values cost a gallery page a third of its time.
    is_answer: ClassVar[bool] = False

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.is_answer = cls.__name__.endswith("Out")

    @model_validator(mode="before")
    @classmethod
    def _reject_nul_characters(cls, data: Any) -> Any:
        if not cls.is_answer and _contains_nul(data):
            raise ValueError("text must not contain NUL characters")
        return data


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(key) or _contains_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_contains_nul(item) for item in value)
    return False
