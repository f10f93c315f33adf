"""Tests for learning limits from headers and correcting levels (pure, driven by `now`)."""

import pytest

from throttle import AdmissionPolicy, Limits, RequestTooLargeError
from throttle.errors import ConfigurationError
from throttle.headers import LimitReading, RateLimitSnapshot
from throttle.limits import KeyLimits, Phase
from throttle.reservation import Cost, Ticket

NO_RESERVE = AdmissionPolicy(reserve_fraction=0.0)


def snapshot(
    tokens_limit: float,
    tokens_left: float,
    requests_limit: float = 6000,
    requests_left: float = 6000,
) -> RateLimitSnapshot:
    """A snapshot of both buckets."""
    return RateLimitSnapshot(
        requests=LimitReading(requests_limit, requests_left),
        tokens=LimitReading(tokens_limit, tokens_left),
    )


def phase(state: KeyLimits) -> Phase:
    """The key's phase, read afresh (the state changes under calls)."""
    return state.phase


def learn(state: KeyLimits, headers: RateLimitSnapshot, cost: float = 0) -> None:
    """End the key's probing: one request whose answer carries `headers`."""
    probe = admitted(state, Cost(cost), 0)
    state.complete(probe, headers, 0, answered=True, succeeded=True)


def admitted(state: KeyLimits, cost: Cost, now: float) -> Ticket:
    """Admit and insist it was admitted."""
    ticket = state.try_admit(cost, now)
    assert isinstance(ticket, Ticket), ticket
    return ticket


def test_unknown_key_probes_one_request_at_a_time() -> None:
    """Before any headers only one request is in flight: the next waits for the probe's lease."""
    state = KeyLimits(Limits(), NO_RESERVE)
    first = admitted(state, Cost(100), 0)
    assert first.probe
    assert state.try_admit(Cost(100), 10) == NO_RESERVE.lease_seconds - 10


def test_first_headers_end_probing_and_set_the_level() -> None:
    """The probe's answer teaches capacity and level; the next request is paced by them."""
    state = KeyLimits(Limits(), NO_RESERVE)
    ticket = admitted(state, Cost(100), 0)
    assert state.complete(ticket, snapshot(6000, 0), 0, answered=True, succeeded=True)
    assert phase(state) is Phase.LEARNED
    assert state.tokens is not None
    assert state.tokens.capacity == 6000
    # 6000 per minute refills 100 tokens a second: 150 tokens need 1.5 s.
    assert state.try_admit(Cost(150), 0) == pytest.approx(1.5)
    assert isinstance(state.try_admit(Cost(150), 1.5), Ticket)


def test_level_correction_subtracts_requests_admitted_after_the_answered_one() -> None:
    """remaining=5000 for request 1, but requests 2 and 3 (1000 each) were sent since."""
    state = KeyLimits(Limits(), NO_RESERVE)
    learn(state, snapshot(60_000, 60_000), cost=10)
    first = admitted(state, Cost(1000), 0)
    admitted(state, Cost(1000), 0)
    admitted(state, Cost(1000), 0)
    state.complete(first, snapshot(60_000, 5000), 0, answered=True, succeeded=True)
    assert state.tokens is not None
    assert state.tokens.level == pytest.approx(3000)


def test_correction_adds_refill_since_the_answered_request_was_admitted() -> None:
    """The server wrote `remaining` at admission; the time since then refilled the bucket."""
    state = KeyLimits(Limits(), NO_RESERVE)
    learn(state, snapshot(60_000, 60_000), cost=10)
    ticket = admitted(state, Cost(1000), 10)
    state.complete(ticket, snapshot(60_000, 0), 12, answered=True, succeeded=True)
    assert state.tokens is not None
    assert state.tokens.level == pytest.approx(2000)  # 2 s at 1000 tokens/s


def test_out_of_order_answers_do_not_overwrite_newer_truth() -> None:
    """An older request's answer arriving late is ignored for the level."""
    state = KeyLimits(Limits(), NO_RESERVE)
    learn(state, snapshot(60_000, 60_000), cost=10)
    older = admitted(state, Cost(100), 0)
    newer = admitted(state, Cost(100), 0)
    assert state.complete(newer, snapshot(60_000, 100), 0, answered=True, succeeded=True)
    assert not state.complete(older, snapshot(60_000, 59_000), 0, answered=True, succeeded=True)
    assert state.tokens is not None
    assert state.tokens.level == pytest.approx(100)


def test_unused_output_is_not_refunded_without_headers() -> None:
    """An answer without headers leaves the charged estimate in place."""
    state = KeyLimits(Limits(), NO_RESERVE)
    learn(state, snapshot(60_000, 10_000), cost=10)
    ticket = admitted(state, Cost(5000), 0)
    state.complete(ticket, None, 0, answered=True, succeeded=True)
    assert state.tokens is not None
    assert state.tokens.level == pytest.approx(5000)


def test_request_larger_than_the_whole_bucket_fails_at_once() -> None:
    """A cost above capacity can never be admitted: RequestTooLargeError, not a wait."""
    state = KeyLimits(Limits(), NO_RESERVE)
    learn(state, snapshot(30_000, 30_000), cost=10)
    with pytest.raises(RequestTooLargeError, match="34307") as caught:
        state.try_admit(Cost(34_307), 0)
    assert (caught.value.requested, caught.value.limit) == (34_307, 30_000)


def test_reserve_is_kept_in_hand_but_never_blocks_a_full_bucket() -> None:
    """With a 10% reserve a request needs cost + 10% of capacity, capped at capacity."""
    state = KeyLimits(Limits(), AdmissionPolicy(reserve_fraction=0.1))
    learn(state, snapshot(6000, 700), cost=10)
    admitted(state, Cost(100), 0)  # 700 >= 100 + 600 reserve
    assert state.try_admit(Cost(100), 0) == pytest.approx(1.0)  # 600 left: 100 short
    full = KeyLimits(Limits(), AdmissionPolicy(reserve_fraction=0.1))
    learn(full, snapshot(6000, 6000), cost=10)
    admitted(full, Cost(5900), 0)  # more than capacity - reserve, yet admitted when full


def test_reserve_delays_admission_by_the_reserve_over_the_rate() -> None:
    """At level 0 a 100-token request waits for 100 + 600 reserve at 100 tokens/s: 7 s."""
    state = KeyLimits(Limits(), AdmissionPolicy(reserve_fraction=0.1))
    learn(state, snapshot(6000, 0), cost=10)
    assert state.try_admit(Cost(100), 0) == pytest.approx(7.0)


def test_cool_down_holds_every_request_until_it_ends() -> None:
    """After the server said wait, nothing is admitted before the time it named."""
    state = KeyLimits(Limits(), NO_RESERVE)
    state.cool_down(5.0)
    assert state.try_admit(Cost(1), 2.0) == pytest.approx(3.0)
    assert isinstance(state.try_admit(Cost(1), 5.0), Ticket)


def test_configured_ceiling_caps_the_learned_limit() -> None:
    """A user ceiling of 1000 TPM wins over a server limit of 60,000."""
    state = KeyLimits(Limits(tpm=1000), NO_RESERVE)
    learn(state, snapshot(60_000, 60_000), cost=10)
    assert state.tokens is not None
    assert state.tokens.capacity == 1000


def test_limit_change_takes_effect_from_the_next_headers() -> None:
    """Azure lowering a deployment's limit shows in the next answer and is obeyed."""
    state = KeyLimits(Limits(), NO_RESERVE)
    learn(state, snapshot(60_000, 60_000), cost=10)
    ticket = admitted(state, Cost(10), 0)
    state.complete(ticket, snapshot(6_000, 6_000), 0, answered=True, succeeded=True)
    assert state.tokens is not None
    assert state.tokens.capacity == 6000
    assert state.tokens.rate == pytest.approx(100)


def test_success_without_headers_goes_blind_on_configured_limits() -> None:
    """A server that sends no headers: pace by the configured ceilings, starting empty."""
    state = KeyLimits(Limits(rpm=60), NO_RESERVE)
    probe = admitted(state, Cost(10), 0)
    state.complete(probe, None, 0, answered=True, succeeded=True)
    assert phase(state) is Phase.BLIND
    assert state.try_admit(Cost(10), 0) == pytest.approx(1.0)
    assert isinstance(state.try_admit(Cost(10), 1.0), Ticket)


def test_failed_answers_without_headers_keep_probing_until_the_limit() -> None:
    """Errors without headers keep probing; after `blind_after` of them the key goes blind."""
    state = KeyLimits(Limits(), AdmissionPolicy(blind_after=2))
    first = admitted(state, Cost(1), 0)
    state.complete(first, None, 0, answered=True, succeeded=False)
    assert phase(state) is Phase.PROBING
    second = admitted(state, Cost(1), 0)
    state.complete(second, None, 0, answered=True, succeeded=False)
    assert phase(state) is Phase.BLIND


def test_transport_failures_do_not_end_probing() -> None:
    """No answer at all teaches nothing: the key stays probing."""
    state = KeyLimits(Limits(), NO_RESERVE)
    ticket = admitted(state, Cost(1), 0)
    state.complete(ticket, None, 0, answered=False, succeeded=False)
    assert phase(state) is Phase.PROBING
    assert isinstance(state.try_admit(Cost(1), 0), Ticket)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rpm": 0},
        {"tpm": -1},
        {"requests_window_seconds": 0},
        {"tokens_window_seconds": float("inf")},
        {"tpm": float("nan")},
    ],
)
def test_invalid_limits_are_refused(kwargs: dict[str, float]) -> None:
    """Non-positive or non-finite limits raise ConfigurationError naming the field."""
    with pytest.raises(ConfigurationError):
        Limits(**kwargs)


def test_invalid_policy_is_refused() -> None:
    """A reserve of 100% or a probe concurrency of 0 is a configuration error."""
    with pytest.raises(ConfigurationError):
        AdmissionPolicy(reserve_fraction=1.0)
    with pytest.raises(ConfigurationError):
        AdmissionPolicy(probe_concurrency=0)


class BiasedServer:
    """The server side of a test: charges `bias` x the estimate; remaining as it would report."""

    def __init__(self, capacity: float, bias: float) -> None:
        # Half full: near capacity the refill is capped and calibration rightly stays out.
        self.capacity, self.bias, self.level = capacity, bias, capacity / 2

    def charge(self, tokens: float) -> RateLimitSnapshot:
        """Charge a request and return the headers its answer will carry."""
        self.level -= tokens * self.bias
        return snapshot(self.capacity, self.level)


def learning_from(server: BiasedServer) -> KeyLimits:
    """A key with no reserve that has learned the server's bucket from one answer."""
    state = KeyLimits(Limits(), NO_RESERVE)
    learn(state, snapshot(server.capacity, server.level))
    return state


def run_biased_job(state: KeyLimits, server: BiasedServer, requests: int, in_flight: int) -> None:
    """Admit `requests` of 100 tokens with `in_flight` unanswered at a time (time stands still)."""
    pending: list[tuple[Ticket, RateLimitSnapshot]] = []
    for _ in range(requests):
        ticket = admitted(state, Cost(100), 0)
        pending.append((ticket, server.charge(100)))
        if len(pending) > in_flight:
            done, headers = pending.pop(0)
            state.complete(done, headers, 0, answered=True, succeeded=True)


def test_persistent_undercount_is_learned_as_a_token_scale() -> None:
    """A server charging 1.5x every estimate teaches a scale of about 1.5."""
    server = BiasedServer(capacity=10_000_000, bias=1.5)
    state = learning_from(server)
    run_biased_job(state, server, requests=200, in_flight=5)
    assert state.token_scale == pytest.approx(1.5, rel=0.02)
    assert state.tokens is not None
    # Calibrated, the model (debiting the 5 unanswered at ~150 each) matches the server.
    assert state.tokens.level == pytest.approx(server.level, abs=5 * 3)


def test_calibration_stays_out_of_a_nearly_full_bucket() -> None:
    """Near capacity the server's refill was capped: the gap says nothing about estimates."""
    server = BiasedServer(capacity=10_000_000, bias=1.5)
    server.level = server.capacity
    state = learning_from(server)
    run_biased_job(state, server, requests=50, in_flight=3)
    assert state.token_scale == 1.0


def test_overcounting_never_scales_below_one() -> None:
    """Estimates above the server's count keep a scale of 1: slower never means unsafe."""
    server = BiasedServer(capacity=10_000_000, bias=0.5)
    state = learning_from(server)
    run_biased_job(state, server, requests=100, in_flight=3)
    assert state.token_scale == 1.0


def test_refused_requests_do_not_drag_the_scale_down() -> None:
    """A 429'd request was never charged; counting it as charged would hide an undercount."""
    server = BiasedServer(capacity=10_000_000, bias=1.3)
    state = learning_from(server)
    for _ in range(100):
        refused = admitted(state, Cost(100), 0)  # the server refuses it: no charge
        state.complete(
            refused, snapshot(server.capacity, server.level), 0, answered=True, succeeded=False
        )
        charged = admitted(state, Cost(100), 0)
        state.complete(charged, server.charge(100), 0, answered=True, succeeded=True)
    assert state.token_scale == pytest.approx(1.3, rel=0.03)


def test_a_limit_change_is_not_mistaken_for_an_estimate_error() -> None:
    """When the capacity changes, the level jump teaches the scale nothing."""
    state = KeyLimits(Limits(), NO_RESERVE)
    learn(state, snapshot(1_000_000, 1_000_000))
    ticket = admitted(state, Cost(100), 0)
    state.complete(ticket, snapshot(10_000, 5_000), 0, answered=True, succeeded=True)
    assert state.token_scale == 1.0


def test_windows_are_per_bucket_for_providers_that_count_requests_per_day() -> None:
    """Groq: `*-requests` headers count per day, tokens per minute; each bucket refills so."""
    groq = Limits(requests_window_seconds=86_400)
    state = KeyLimits(groq, NO_RESERVE)
    probe = admitted(state, Cost(10), 0)
    state.complete(
        probe,
        snapshot(6000, 0, requests_limit=14_400, requests_left=0),
        0,
        answered=True,
        succeeded=True,
    )
    assert state.requests is not None
    assert state.tokens is not None
    assert state.requests.rate == pytest.approx(14_400 / 86_400)
    assert state.tokens.rate == pytest.approx(100)
    assert state.try_admit(Cost(10), 0) == pytest.approx(6.0)  # one request per 6 s
