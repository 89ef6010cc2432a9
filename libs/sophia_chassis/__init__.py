"""The chassis every Sophia service stands on: app factory, settings, metrics, logs,
problem responses and one resilient outbound HTTP client."""

from sophia_chassis.app import create_app
from sophia_chassis.http import CircuitOpenError, ResilientClient
from sophia_chassis.settings import ServiceSettings

__all__ = ["create_app", "ServiceSettings", "ResilientClient", "CircuitOpenError"]
