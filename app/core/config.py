"""Service settings: one pydantic-settings object, read from GRADCHECK_* environment variables."""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every limit and switch of the service; each field is the env var GRADCHECK_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="GRADCHECK_", env_file=".env", extra="ignore")

    max_body_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    max_batch_size: int = Field(16_384, ge=1, description="Largest N (samples per request).")
    max_classes: int = Field(10_000, ge=2, description="Largest C (classes per sample).")
    max_output_entries: int = Field(
        8_000_000,
        ge=1,
        description="Largest total number of numbers in the requested outputs "
        "(a Jacobian alone has N·C·C).",
    )


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
