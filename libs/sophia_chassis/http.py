"""One way out: an httpx client with timeouts, retries with backoff (tenacity), honouring
Retry-After, and a circuit breaker per upstream host."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

log = structlog.get_logger()


class CircuitOpenError(RuntimeError):
    """The upstream failed repeatedly; calls fail fast until the breaker half-opens."""


class UpstreamError(RuntimeError):
    """The upstream kept failing through every retry. `retry_after` is set when its last answer
    was a 429 or 503 saying when to come back (an overloaded upstream shedding load)."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(reason)
        self.retry_after, self.status = retry_after, status


@dataclass
class CircuitBreaker:
    failure_threshold: int = 5
    reset_timeout: float = 30.0
    state: str = "closed"
    failures: int = 0
    opened_at: float = field(default=0.0)
    trial_at: float = field(default=0.0)

    def before_call(self, host: str) -> None:
        now = time.monotonic()
        if self.state == "open":
            if now - self.opened_at < self.reset_timeout:
                raise CircuitOpenError(f"{host} is failing; circuit open for {self.reset_timeout:.0f}s")
            self.state, self.trial_at = "half-open", now  # this call is the one trial that decides
        elif self.state == "half-open":
            # Concurrent callers wait for the trial rather than all hitting a sick upstream; a trial
            # that never reported (its caller was cancelled) is replaced after the reset timeout.
            if now - self.trial_at < self.reset_timeout:
                raise CircuitOpenError(f"{host} is failing; a trial call is deciding whether it recovered")
            self.trial_at = now

    def record_success(self) -> None:
        self.state, self.failures = "closed", 0

    def record_failure(self) -> None:
        self.failures += 1
        if self.state == "half-open" or self.failures >= self.failure_threshold:
            self.state, self.opened_at = "open", time.monotonic()


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class ResilientClient:
    def __init__(
        self,
        base_url: str = "",
        *,
        timeout: float = 5.0,
        attempts: int = 3,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=headers, transport=transport)
        self._attempts, self._backoff_max = attempts, backoff_max
        self._exponential = wait_exponential_jitter(multiplier=backoff_initial, max=backoff_max)
        self._breaker_args = (failure_threshold, reset_timeout)
        self.breakers: dict[str, CircuitBreaker] = {}

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        return min(retry_after, self._backoff_max) if retry_after is not None else self._exponential(state)

    def breaker(self, host: str) -> CircuitBreaker:
        return self.breakers.setdefault(host, CircuitBreaker(*self._breaker_args))

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Retries transport errors, 5xx and 429; returns any other response to the caller."""
        host = self._client.build_request(method, url).url.host
        breaker = self.breaker(host)
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._attempts),
                wait=self._wait,
                retry=retry_if_exception_type(_Retryable),
                reraise=True,
            ):
                with attempt:
                    breaker.before_call(host)
                    try:
                        response = await self._client.request(method, url, **kwargs)
                    except httpx.TransportError as exc:
                        breaker.record_failure()
                        raise _Retryable(f"{type(exc).__name__} talking to {host}") from exc
                    if response.status_code == 429 or response.status_code >= 500:
                        retry_after = retry_after_seconds(response)
                        if response.status_code in (429, 503) and retry_after is not None:
                            # Busy, not broken: it answered at once and said when to come back (load
                            # shedding). Retried after that; the breaker stays closed for it.
                            breaker.record_success()
                        else:
                            breaker.record_failure()
                        log.warning("upstream_retry", host=host, status=response.status_code)
                        raise _Retryable(f"{host} answered {response.status_code}", retry_after, response.status_code)
                    breaker.record_success()
                    return response
        except _Retryable as exc:
            raise UpstreamError(
                f"{method} {url}: {exc} after {self._attempts} attempts", exc.status, exc.retry_after
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def aclose(self) -> None:
        await self._client.aclose()
