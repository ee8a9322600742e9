"""Schema fuzzing: schemathesis generates requests for every operation of the service's own
OpenAPI document (valid and invalid ones) and checks each response: never a 5xx, and status
code, content type, headers and body all as documented."""

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from app.core.config import Settings
from app.main import create_app

EXAMPLES_PER_OPERATION = 25

app = create_app(Settings())
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms_to_its_schema(case: schemathesis.Case[Any]) -> None:
    """Every default schemathesis check passes, `not_a_server_error` among them, except
    `positive_data_acceptance`: the JSON schema cannot say everything the service checks
    (C ≥ 2, rows of equal length, labels below C, ...), and such schema-valid requests get
    their documented 422."""
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
