"""Access: optional API keys on every /v1 endpoint, and the key that signs problem ids.

API keys (GRADCHECK_API_KEYS, comma-separated) are checked from the X-API-Key header, declared
with FastAPI's `APIKeyHeader` so that Swagger UI's Authorize button sends it. The header's
SHA-256 digest is compared with every configured key's digest by `hmac.compare_digest`, without
stopping at the first match, so the answer takes the same time whichever key (if any) matches.
Neither keys nor the signing secret are ever logged or echoed.
"""

import hashlib
import hmac
import logging
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Security
from fastapi.security import APIKeyHeader

from app.core.config import Settings

log = logging.getLogger("gradcheck.security")

API_PREFIX = "/v1"
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    scheme_name="APIKey",
    description="One of the keys in GRADCHECK_API_KEYS (needed only when that is set).",
    auto_error=False,
)
MIN_SECRET_LENGTH = 32
MISSING_KEY = "This endpoint needs an API key: send it in the X-API-Key header."
WRONG_KEY = "The API key sent in X-API-Key is not valid."


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "APIKey"})


def api_key_guard(settings: Settings) -> list[Any]:
    """The dependencies that every /v1 router gets: none when no key is configured (logged as a
    warning: the service is open), else one that answers 401 unless X-API-Key holds a key."""
    if not settings.api_keys:
        log.warning(
            "GRADCHECK_API_KEYS is not set: the /v1 endpoints are open to anyone who can reach "
            "the service"
        )
        return []
    digests = tuple(_digest(key.get_secret_value()) for key in settings.api_keys)
    log.info("API keys required on the /v1 endpoints (%d key(s) configured)", len(digests))

    async def require_api_key(key: Annotated[str | None, Security(API_KEY_HEADER)]) -> None:
        """401 unless the X-API-Key header holds one of the configured keys."""
        if not key:
            raise _unauthorized(MISSING_KEY)
        given = _digest(key)
        matched = False
        for digest in digests:
            matched |= hmac.compare_digest(given, digest)
        if not matched:
            raise _unauthorized(WRONG_KEY)

    return [Security(require_api_key)]


def is_api_router(router: APIRouter) -> bool:
    """True if any route of `router` lies under /v1 (those need the API key when one is set)."""
    return any(getattr(route, "path", "").startswith(API_PREFIX) for route in router.routes)


def problem_signing_key(settings: Settings) -> bytes:
    """The key that signs problem ids: GRADCHECK_SECRET_KEY, else 32 random bytes per process
    (logged as a warning: ids then die with the process and differ between replicas)."""
    if settings.secret_key is None:
        log.warning(
            "GRADCHECK_SECRET_KEY is not set: problem ids are signed with a random key made for "
            "this process; they stop working when it restarts and other replicas refuse them"
        )
        return secrets.token_bytes(32)
    secret = settings.secret_key.get_secret_value()
    if len(secret) < MIN_SECRET_LENGTH:
        log.warning(
            "GRADCHECK_SECRET_KEY is shorter than %d characters: use a long random one, e.g. "
            "from `python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
            MIN_SECRET_LENGTH,
        )
    return secret.encode()
