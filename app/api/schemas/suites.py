"""Response models of the suites (`GET /v1/suites`, `GET /v1/suites/{name}`,
`GET /v1/suites/{name}/cases/{case}`): they document what `app.api.routes.suites` writes."""

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.api.schemas.compute import ToleranceOptions


class SuiteSummary(BaseModel):
    """One suite, without its cases."""

    name: str = Field(description="The suite's name, e.g. basics.", examples=["basics"])
    version: str = Field(description="The suite's version: its cases change only with it.")
    description: str = Field(description="What the suite's cases are about.")
    cases: int = Field(description="How many cases it has.")
    url: str = Field(description="Where its cases are: /v1/suites/{name}.")


class SuiteList(BaseModel):
    """Every suite the service has."""

    service_version: str = Field(description="The service's version.")
    suites: list[SuiteSummary]


class CaseModel(BaseModel):
    """One hard case: a ready request for `endpoint`, and what a tested function needs for it."""

    name: str = Field(description="Unique within the suite.", examples=["spread_800"])
    endpoint: str = Field(
        description="The route the request is for.", examples=["/v1/cross-entropy"]
    )
    reason: str = Field(description="Why the case is hard, in one line.")
    dtype: Literal["float64", "float32", "bfloat16"] = Field(
        description="The dtype of the arrays the tested function receives (the logits; the "
        "input, weight and bias for /v1/linear-cross-entropy). The request's arrays are exactly "
        "representable in it, and the reference is computed from exactly those values (in "
        "float64)."
    )
    tolerance: ToleranceOptions = Field(
        description="The tolerance the function's outputs are held to (also in the request)."
    )
    options: list[str] = Field(
        description="The loss options the case needs (reduction, weight, ignore_index, "
        "label_smoothing, z_loss, softcap; causal_shift, denominator for "
        "/v1/linear-cross-entropy): a function that takes none of them cannot run it."
    )
    features: list[Literal["k_dim", "no_batch", "probability_targets"]] = Field(
        description="The input features the case needs beyond (N, C) logits with index labels."
    )
    request: dict[str, Any] | None = Field(
        description="The request body for `endpoint` (logits or input, linear_weight, "
        "linear_bias; labels, options, tolerance); null "
        "for a large case: fetch it from `request_url` (as .npz with Accept: application/x-npz)."
    )
    request_url: str = Field(description="Where the case's request alone is served.")


class SuiteResponse(BaseModel):
    """A suite with its cases."""

    name: str = Field(examples=["basics"])
    version: str = Field(description="The suite's version: its cases change only with it.")
    service_version: str = Field(description="The service's version.")
    description: str
    cases: list[CaseModel]
