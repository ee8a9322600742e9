"""Service settings: one pydantic-settings object, read from GRADCHECK_* environment variables."""

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Every limit and switch of the service; each field is the env var GRADCHECK_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="GRADCHECK_", env_file=".env", extra="ignore")

    max_body_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    max_batch_size: int = Field(16_384, ge=1, description="Largest N (samples per request).")
    max_npz_body_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="Largest binary (application/x-npz) request body accepted (413 above).",
    )
    max_classes: int = Field(
        10_000,
        ge=2,
        description="Largest C (classes per position) of a request that asks for a C×C output "
        "(jacobian, numeric_jacobian).",
    )
    max_vocabulary: int = Field(
        262_144,
        ge=2,
        description="Largest C of a request that asks for no C×C output (LLM vocabularies); "
        "the input, output and memory limits bound such requests further.",
    )
    max_output_entries: int = Field(
        8_000_000,
        ge=1,
        description="Largest total number of numbers in the requested outputs "
        "(a Jacobian alone has N·C·C).",
    )
    max_submissions: int = Field(
        1000,
        ge=1,
        description="Most submissions (or roster items) in one /v1/grade/batch request (413 "
        "above, decided from a scan of the body before it is parsed where possible).",
    )
    numeric_gradient_max_evaluations: int = Field(
        4_000_000,
        ge=0,
        description="A numeric gradient that would take more loss evaluations than this (points "
        "of the stencil × positions × classes; about 0.2 µs each) is checked along 8 random "
        "directions instead, unless the request sets numeric.directions.",
    )
    request_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Longest time from a request's arrival to its response (504 above); the "
        "numeric derivatives stop at the next class column once it has passed.",
    )
    inline_max_entries: int = Field(
        2048,
        ge=0,
        description="Requests whose logits and requested outputs hold at most this many "
        "numbers are computed on the event loop (about 1 ms, 3 ms at worst, where a hop to a "
        "worker thread costs more under load); larger ones in a worker thread. 0: always a "
        "worker thread.",
    )
    memory_budget_bytes: int = Field(
        0,
        ge=0,
        description="Memory that the requests being computed may hold together, in bytes (each "
        "request's peak is estimated from its shape before it computes). 0 (the default): "
        "GRADCHECK_MEMORY_BUDGET_FRACTION of the container's memory limit (cgroup v2 or v1), or "
        "of the machine's memory. With several worker processes, each has its own budget.",
    )
    max_request_memory_bytes: int = Field(
        1536 * 1024 * 1024,
        ge=0,
        description="Largest estimated peak memory of one request (413 above), whatever its "
        "outputs: `include: []` on huge logits still computes softmax, loss and gradient. "
        "0: only the whole memory budget bounds a request.",
    )
    memory_budget_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of the memory limit taken as the budget when "
        "GRADCHECK_MEMORY_BUDGET_BYTES is 0 (the rest is left to Python, the parsed request "
        "bodies and the responses being sent).",
    )
    admission_wait_seconds: float = Field(
        5.0,
        ge=0,
        description="Longest time a request waits in the queue for memory before it is "
        "refused with 503 and Retry-After.",
    )
    admission_queue_size: int = Field(
        32,
        ge=0,
        description="Most requests waiting for memory at once; one more is refused at once "
        "with 503 and Retry-After.",
    )
    admission_small_bytes: int = Field(
        16 * 1024 * 1024,
        ge=0,
        description="Requests estimated to need at most this many bytes are admitted without "
        "waiting, even while large ones queue (their memory still counts as in flight).",
    )
    send_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="Longest time a response may wait for the client to read more of it; then "
        "the connection is closed and the response's memory freed (logged as the client's, "
        "status 499).",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser, comma-separated "
        "(e.g. https://course.example.org); empty (the default) sends no CORS headers.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Level of the service's and uvicorn's logs."
    )
    log_json: bool = Field(
        True, description="One JSON object per log line on stdout; false for plain text."
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Key that signs problem ids (HMAC-SHA256), at least 32 random characters. "
        "Unset: a random key per process, so ids die with the process and differ between "
        "replicas; set it for any real deployment.",
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="API keys, comma-separated; when set, every /v1 endpoint needs one in the "
        "X-API-Key header. Empty (the default): the service is open.",
    )

    docs_url: str | None = Field(
        None,
        description="Base URL of a published docs site (e.g. https://gradcheck.example.org): "
        "diagnosis messages link to its pages. Unset: to this service's /guide/ when it serves "
        "one (GRADCHECK_GUIDE_DIR), from the request's base URL; else they name "
        "docs/maths.md#section.",
    )
    guide_dir: str | None = Field(
        None,
        description="Directory of the built MkDocs site (`mkdocs build`), served at /guide/ "
        "(the container image builds and sets it). Unset: no /guide/.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        """Accept uvicorn's lower-case level names too."""
        return value.upper() if isinstance(value, str) else value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        """A comma-separated string from the environment as a list of keys."""
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        """A comma-separated string from the environment as a list of origins."""
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
