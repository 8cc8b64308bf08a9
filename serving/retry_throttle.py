"""Client-side retry throttling, as gRPC specifies it for its own retries (gRFC A6).

Retrying every refused request at twice a server's capacity multiplies the offered load and
lowers what the server manages to serve. A token bucket stops that: it starts full at
``max_tokens``; every failure that could be retried costs one token, every success earns back
``token_ratio``; retries are allowed only while more than half the tokens remain:

    tokens <- max(0, tokens - 1)                     on a retryable failure
    tokens <- min(max_tokens, tokens + token_ratio)  on a success
    retry allowed  iff  tokens > max_tokens / 2

In steady overload the tokens settle at the threshold, where failures are paid for by successes,
so retries stay about ``token_ratio`` per success instead of ``max_retries`` per failure; once
the server recovers, successes refill the bucket and retries resume.
"""

from __future__ import annotations

import threading


class RetryThrottle:
    """A thread-safe retry token bucket (see the module docstring).

    Args:
        max_tokens: Bucket size (gRPC's ``maxTokens``, 1-1000).
        token_ratio: Tokens a success earns back (gRPC's ``tokenRatio``, > 0).
    """

    def __init__(self, max_tokens: float = 10.0, token_ratio: float = 0.1) -> None:
        if not 0 < max_tokens <= 1000 or token_ratio <= 0:
            raise ValueError(f"max_tokens={max_tokens} must be in (0, 1000] and "
                             f"token_ratio={token_ratio} > 0")
        self.max_tokens = max_tokens
        self.token_ratio = token_ratio
        self.tokens = max_tokens
        self._lock = threading.Lock()

    def on_success(self) -> None:
        """Records a successful call."""
        with self._lock:
            self.tokens = min(self.max_tokens, self.tokens + self.token_ratio)

    def on_failure(self) -> bool:
        """Records a retryable failure; returns whether a retry is allowed now."""
        with self._lock:
            self.tokens = max(0.0, self.tokens - 1.0)
            return self.tokens > self.max_tokens / 2
