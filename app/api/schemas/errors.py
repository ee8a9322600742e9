"""Error bodies: 422 with every problem located, other 4xx with one sentence."""

from pydantic import BaseModel, Field


class ErrorItem(BaseModel):
    """One problem with the request."""

    loc: list[str | int] = Field(description='Where: e.g. ["body", "logits", 3, 1].')
    msg: str = Field(description="What is wrong and how to fix it.")
    type: str = Field(description='A machine-readable kind, e.g. "finite_number".')


class ValidationErrorResponse(BaseModel):
    """422: the request is well-formed JSON but not a valid problem."""

    detail: list[ErrorItem] = Field(
        description="The problems found, each with its location: at most the first 20 (an "
        "array stops at its first bad element)."
    )
    errors_omitted: int | None = Field(
        None, description="How many more problems were found than `detail` lists (absent if none)."
    )


class MessageResponse(BaseModel):
    """4xx other than 422: one sentence saying what to change."""

    detail: str = Field(description="What to change, in one sentence.")
