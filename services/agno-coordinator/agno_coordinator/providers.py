"""Calling one OpenAI-compatible provider: bearer auth, retries with backoff, Retry-After
honoured up to a limit, and one circuit breaker per provider.

Not the chassis ResilientClient, on purpose: a streamed answer must be opened (headers
only) and retried only before its first byte, which its `request()` cannot do; a router
should fall back at once rather than sleep through a long 429; and its breakers are per
host, while two providers may share a host (a gateway, or loopback in tests). The
chassis' CircuitBreaker and Retry-After parsing are reused as they are."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx
import structlog

from sophia_chassis.http import CircuitBreaker, CircuitOpenError, retry_after_seconds

log = structlog.get_logger()


class ProviderFailure(Exception):
    """This provider cannot answer now; the caller should try the next model.
    `reason` is a metric label: circuit_open, timeout, server_error, rate_limited,
    transport_error, auth, model_not_found, bad_response."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None):
        super().__init__(detail)
        self.reason, self.retry_after = reason, retry_after


class ProviderRejected(Exception):
    """The provider refused the request itself (a 4xx): the caller's to fix, passed back."""

    def __init__(self, response: httpx.Response):
        super().__init__(f"provider answered {response.status_code}")
        self.response = response


# 4xx answers that say the provider is misconfigured here (our key, our table's model id),
# not that the request is wrong: another provider may well serve it.
CONFIG_FAILURES = {401: "auth", 403: "auth", 404: "model_not_found"}


class Provider:
    def __init__(
        self,
        name: str,
        base_url: str | None,
        api_key: str | None,
        *,
        key_required: bool = True,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        attempts: int = 2,
        backoff: float = 0.5,
        backoff_max: float = 4.0,
        max_retry_wait: float = 5.0,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.name, self.base_url = name, (base_url or "").rstrip("/") + "/"
        self.configured = bool(base_url) and (bool(api_key) or not key_required)
        self.attempts, self.backoff, self.backoff_max = attempts, backoff, backoff_max
        self.max_retry_wait = max_retry_wait
        self.breaker = CircuitBreaker(failure_threshold, reset_timeout)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
        )

    @property
    def up(self) -> bool:
        """Configured and not shedding calls (an open breaker past its reset time will try again)."""
        if not self.configured:
            return False
        b = self.breaker
        return b.state != "open" or time.monotonic() - b.opened_at >= b.reset_timeout

    def _delay(self, attempt: int) -> float:
        return min(self.backoff_max, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    async def send(
        self, body: dict[str, Any], *, stream: bool, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """POST chat/completions. Returns a 2xx response: read when `stream` is false, open
        (body unread, caller closes it) when true. Raises ProviderFailure or ProviderRejected."""
        last: ProviderFailure | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                self.breaker.before_call(self.name)
            except CircuitOpenError as exc:
                # Opened by our own retries: report what actually went wrong.
                remaining = self.breaker.reset_timeout - (time.monotonic() - self.breaker.opened_at)
                raise last or ProviderFailure("circuit_open", f"{self.name}: {exc}", max(0.0, remaining)) from exc
            response = None
            try:
                request = self._client.build_request("POST", "chat/completions", json=body, headers=headers)
                response = await self._client.send(request, stream=True)
                if response.status_code < 400 and not stream:
                    await response.aread()
            except httpx.TimeoutException as exc:
                self.breaker.record_failure()
                await _close(response)
                # A timeout already cost the caller the whole wait: fall back, do not repeat it.
                raise ProviderFailure("timeout", f"{self.name} did not answer in time ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                self.breaker.record_failure()
                await _close(response)
                last = ProviderFailure("transport_error", f"{self.name}: {type(exc).__name__}: {exc}")
                if attempt < self.attempts:
                    await asyncio.sleep(self._delay(attempt))
                continue

            status = response.status_code
            if status == 429 or status >= 500:
                await response.aread()
                await response.aclose()
                self.breaker.record_failure()
                wait = retry_after_seconds(response) if status == 429 else None
                reason = "rate_limited" if status == 429 else "server_error"
                last = ProviderFailure(reason, f"{self.name} answered {status} {_message(response)}".strip(), wait)
                log.warning("provider_retry", provider=self.name, status=status, attempt=attempt)
                if attempt == self.attempts:
                    break
                delay = wait if wait is not None else self._delay(attempt)
                if delay > self.max_retry_wait:
                    last = ProviderFailure(
                        reason, f"{last}; asks to wait {delay:.0f}s, longer than {self.max_retry_wait:.0f}s", wait
                    )
                    break
                await asyncio.sleep(delay)
                continue
            if status in CONFIG_FAILURES:
                await response.aread()
                await response.aclose()
                if CONFIG_FAILURES[status] == "auth":
                    self.breaker.record_failure()  # a rejected key is an outage until someone fixes it
                raise ProviderFailure(CONFIG_FAILURES[status], f"{self.name} answered {status} {_message(response)}")
            self.breaker.record_success()
            if status >= 400:
                await response.aread()
                await response.aclose()
                raise ProviderRejected(response)
            return response
        assert last is not None
        raise last

    async def aclose(self) -> None:
        await self._client.aclose()


async def _close(response: httpx.Response | None) -> None:
    if response is not None:
        await response.aclose()


def _message(response: httpx.Response) -> str:
    """The provider's error message (OpenAI's `{"error": {"message"}}`), short."""
    try:
        error = response.json().get("error")
        text = error.get("message") if isinstance(error, dict) else str(error or "")
    except (ValueError, AttributeError):
        text = response.text
    return f"({text[:200]})" if text else ""
