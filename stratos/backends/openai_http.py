"""Generate through any OpenAI-compatible endpoint: OpenAI, vLLM, most hosted providers.

One POST /chat/completions per prompt (asking for all `n` samples at once),
`max_concurrency` of them in flight. Rate limits (429), server errors (5xx),
timeouts and dropped connections are retried with exponential backoff; any
other 4xx is the caller's mistake and is raised at once, since repeating it
only spends money. Tokens come from the response's `usage` block and dollars
from the configured per-1k prices.

The API key lives in a `SecretStr` and is only unwrapped inside the request
auth hook: it is never part of a repr, a log line, an error or a result.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from pydantic import SecretStr

from stratos.backends.base import Completion, Messages, SamplingParams, Usage
from stratos.errors import ServiceError

log = logging.getLogger(__name__)

# Timeouts, conflicts and rate limits clear up by themselves, as do server errors; other 4xx do not.
RETRYABLE_STATUS = frozenset({408, 409, 429})
MAX_RETRY_AFTER_S = 30.0  # never sleep longer than this on a server's Retry-After


class BackendError(ServiceError):
    """A request that failed for good; the message names the endpoint, the status and the fix."""


class _BearerAuth(httpx.Auth):
    """Adds the Authorization header per request, so the client object never holds the raw key."""

    def __init__(self, key: SecretStr):
        self._key = key

    def auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = f"Bearer {self._key.get_secret_value()}"
        yield request


class OpenAIBackend:
    """Chat completions over HTTP with concurrency, retries and usage accounting."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: SecretStr | None = None,
        price_per_1k_input: float = 0.0,
        price_per_1k_output: float = 0.0,
        max_concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        name: str | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url '{base_url}' is not an http(s) URL; use e.g. 'http://127.0.0.1:8000/v1'"
            )
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise ValueError(
                f"max_concurrency={max_concurrency}, max_retries={max_retries}, timeout_s={timeout_s}: "
                "need max_concurrency >= 1, max_retries >= 0 and timeout_s > 0"
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = name or model
        self.price_per_1k_input = price_per_1k_input
        self.price_per_1k_output = price_per_1k_output
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.usage = Usage()
        self.retries = 0  # failed attempts that were retried (rate limits, 5xx, timeouts)
        self._api_key = api_key
        self._lock = threading.Lock()  # usage is updated from the worker threads
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_concurrency),
            auth=_BearerAuth(api_key) if api_key is not None else None,
        )

    def __repr__(self) -> str:
        key = "set" if self._api_key is not None else "none"
        return f"OpenAIBackend(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r}, api_key={key})"

    __str__ = __repr__

    def close(self) -> None:
        self._client.close()

    def generate(self, prompts: list[Messages], params: SamplingParams) -> list[list[Completion]]:
        """For each prompt, `params.n` completions; requests run `max_concurrency` at a time."""
        if not prompts:
            return []
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(prompts))) as pool:
            futures = [pool.submit(self._samples, messages, params) for messages in prompts]
            try:
                results = [future.result() for future in futures]
            except BaseException:
                # One prompt failed for good: do not send (and pay for) the ones still queued.
                for future in futures:
                    future.cancel()
                raise
        with self._lock:
            self.usage.seconds += time.perf_counter() - start
        return results

    def _samples(self, messages: Messages, params: SamplingParams) -> list[Completion]:
        """All n samples for one prompt; asks again for the rest when a server ignores `n`."""
        samples: list[Completion] = []
        while len(samples) < params.n:
            # A fixed seed would make every follow-up request repeat the first one's samples.
            seed = None if params.seed is None else params.seed + len(samples)
            got = self._request(messages, params, params.n - len(samples), seed)
            if not got:
                raise BackendError(
                    f"{self.base_url}/chat/completions returned no choices for model '{self.model}'"
                )
            samples.extend(got)
        return samples[: params.n]

    def _request(
        self, messages: Messages, params: SamplingParams, n: int, seed: int | None
    ) -> list[Completion]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "n": n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if seed is not None:
            body["seed"] = seed
        start = time.perf_counter()  # latency as the caller lives it: retries and backoff included
        data = self._post_with_retries(body)
        return self._account(data, time.perf_counter() - start)

    def _post_with_retries(self, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base_url}/chat/completions"
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            try:
                response = self._client.post(url, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                reason = type(exc).__name__
            else:
                if response.status_code < 400:
                    return self._json(response)
                if response.status_code not in RETRYABLE_STATUS and response.status_code < 500:
                    raise BackendError(self._describe_failure(response)) from None
                reason = f"HTTP {response.status_code}"
                retry_after = _retry_after(response)
            if attempt == self.max_retries:
                raise BackendError(
                    f"{url} failed {attempt + 1} times (last: {reason}); check that the endpoint is up "
                    "or raise max_retries / timeout_s"
                ) from None
            delay = retry_after if retry_after is not None else self.backoff_s * 2**attempt
            with self._lock:
                self.retries += 1
            log.warning(
                "%s: %s from %s, retry %d/%d in %.2fs",
                self.name,
                reason,
                url,
                attempt + 1,
                self.max_retries,
                delay,
            )
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise BackendError(
                f"{response.request.url} answered {response.status_code} with a body that is not JSON"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise BackendError(
                f"{response.request.url} answered without a 'choices' list; is it an OpenAI-compatible endpoint?"
            )
        return data

    def _describe_failure(self, response: httpx.Response) -> str:
        """The server's own error message plus the likely fix, with the key redacted just in case it echoes it."""
        status, url = response.status_code, response.request.url
        try:
            detail = str(response.json().get("error", {}).get("message") or response.text)
        except (ValueError, AttributeError):
            detail = response.text
        hint = {
            401: "check the API key in the environment variable named by api_key_env",
            403: "the API key lacks access to this model",
            404: f"check the model name '{self.model}' and that base_url ends with '/v1'",
        }.get(status, "check the request parameters")
        return self._redact(f"{url} answered {status}: {detail[:300]}; {hint}")

    def _redact(self, text: str) -> str:
        if self._api_key is not None and self._api_key.get_secret_value():
            text = text.replace(self._api_key.get_secret_value(), "**********")
        return text

    def _account(self, data: dict[str, Any], latency_s: float) -> list[Completion]:
        """Completions from one response; adds its tokens and dollars to `usage`."""
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        choices = data["choices"]
        # The usage block covers all choices of the request; split it so per-sample sums stay exact.
        share, extra = divmod(completion_tokens, max(len(choices), 1))
        completions = [
            Completion(
                text=(choice.get("message") or {}).get("content") or "",
                prompt_tokens=prompt_tokens,
                completion_tokens=share + (1 if i < extra else 0),
                latency_s=latency_s,
                finish_reason=choice.get("finish_reason") or "stop",
            )
            for i, choice in enumerate(choices)
        ]
        cost = (
            prompt_tokens / 1000 * self.price_per_1k_input
            + completion_tokens / 1000 * self.price_per_1k_output
        )
        with self._lock:
            self.usage.requests += 1
            self.usage.prompt_tokens += prompt_tokens
            self.usage.completion_tokens += completion_tokens
            self.usage.cost_usd += cost
        return completions


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a numeric Retry-After header (rate limits usually send one), capped."""
    value = response.headers.get("retry-after")
    try:
        return min(float(value), MAX_RETRY_AFTER_S) if value is not None else None
    except ValueError:
        return None
