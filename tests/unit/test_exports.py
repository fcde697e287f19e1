"""The public surface of ``wirebus`` and what importing it pulls in."""

import subprocess
import sys

import pytest

import wirebus

EXPECTED = {
    "Aborted",
    "AlreadyExists",
    "App",
    "Authentication",
    "Identity",
    "JWTAuthenticator",
    "StaticTokens",
    "current_identity",
    "require_scopes",
    "Behaviour",
    "CallNext",
    "CallInfo",
    "Command",
    "ConfigurationError",
    "Context",
    "ConversionError",
    "ConversionSchemaError",
    "DomainError",
    "Event",
    "FailedPrecondition",
    "FieldViolation",
    "Gateway",
    "GatewayConfig",
    "HandlerNotFound",
    "InvalidArgument",
    "LifecycleError",
    "Mediator",
    "Message",
    "NotFound",
    "PermissionDenied",
    "Query",
    "Request",
    "ResourceExhausted",
    "Retry",
    "Router",
    "Saga",
    "Stage",
    "Unauthenticated",
    "Unavailable",
    "Validation",
    "WirebusError",
    "current_call",
    "current_context",
}


def test_all_lists_exactly_the_public_api() -> None:
    assert set(wirebus.__all__) == EXPECTED
    assert len(wirebus.__all__) == len(EXPECTED), "no name is listed twice"


@pytest.mark.parametrize(
    "name",
    sorted(EXPECTED),
)
def test_each_public_name_is_importable_and_documented(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from wirebus import {name}", namespace)  # the import statement users write

    obj = namespace[name]
    assert obj is getattr(wirebus, name)
    assert (obj.__doc__ or "").strip(), f"wirebus.{name} has no docstring"


def test_importing_wirebus_does_not_import_kafka_sqlalchemy_or_protovalidate() -> None:
    code = (
        "import sys, wirebus\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.split('.')[0] in ('aiokafka', 'sqlalchemy', 'protovalidate'))\n"
        "print(','.join(heavy))\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.strip() == ""
