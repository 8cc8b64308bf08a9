"""gRPC-style retry throttling: the token bucket's exact arithmetic and the client's use of it."""

import grpc
import pytest

from serving.client import PredictionClient
from serving.retry_throttle import RetryThrottle


class _Refusal(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def test_retries_stop_below_half_the_tokens_and_resume_after_successes():
    throttle = RetryThrottle(max_tokens=4, token_ratio=0.5)
    assert [throttle.on_failure() for _ in range(3)] == [True, False, False]  # 3, 2, 1 tokens
    assert throttle.tokens == 1.0
    for _ in range(3):
        throttle.on_success()  # 1.5, 2.0, 2.5
    assert throttle.tokens == 2.5
    assert throttle.on_failure() is False  # 1.5 <= 2
    for _ in range(10):
        throttle.on_success()
    assert throttle.tokens == 4.0  # capped
    assert throttle.on_failure() is True  # 3 > 2


@pytest.mark.parametrize("max_tokens, ratio", [(0, 0.1), (1001, 0.1), (10, 0)])
def test_bad_parameters_are_refused(max_tokens, ratio):
    with pytest.raises(ValueError, match="max_tokens"):
        RetryThrottle(max_tokens, ratio)


def test_client_retries_only_unavailable_within_its_budget_and_the_throttle():
    throttle = RetryThrottle(max_tokens=4, token_ratio=1.0)
    with PredictionClient("127.0.0.1:1", "cvr", max_retries=2, seed=0,
                          retry_throttle=throttle) as client:
        unavailable = _Refusal(grpc.StatusCode.UNAVAILABLE)
        assert client.retry_delay(_Refusal(grpc.StatusCode.INVALID_ARGUMENT), 0) is None
        assert throttle.tokens == 4.0  # a non-retryable error costs no token
        assert client.retry_delay(unavailable, 0) is not None  # 3 tokens left
        assert client.retry_delay(unavailable, 2) is None  # past max_retries; 2 tokens left
        assert client.retry_delay(unavailable, 0) is None  # throttled: 1 token <= 2
        assert client.retry_delay(None, 0) is None and throttle.tokens == 2.0
        client.retry_delay(None, 0)
        client.retry_delay(None, 0)  # back to 4 tokens
        assert client.retry_delay(unavailable, 0) is not None  # 3 > 2: retries resume
