"""Learning how far token estimates are off: the token scale, as one pure function.

How estimates are calibrated: the client's token estimate and the server's count differ (the
server counts characters; tiktoken counts tokens), and a persistent undercount, times the
requests in flight, overdraws the server's bucket. Between two corrections, the gap between the
level the model predicted and the level the server reported is what the server charged beyond
what was debited; with a second ledger of raw estimates that gives the true ratio of charges to
estimates. The token scale (never below 1) moves toward that ratio and multiplies later
estimates. Measuring the ratio, not the residual error, keeps the answers still in flight from
making the feedback overshoot.
"""

from __future__ import annotations

CALIBRATION_RATE = 0.5  # how far each measurement moves the token scale toward what it saw
FULL = 0.95  # near capacity the server's refill was capped: the arithmetic no longer holds
MAX_TOKEN_SCALE = 4.0  # the server is never assumed to charge more than 4x the estimate


def calibrated_scale(
    scale: float,
    predicted: tuple[float, float],
    reported: tuple[float, float],
    *,
    debited: float,
    estimated: float,
) -> float:
    """Return the token scale moved toward the ratio the server really charged.

    Args:
        scale: the token scale so far (1 means estimates are taken as they are).
        predicted: (capacity, level) of the tokens bucket the model held just before the
            server's answer corrected it.
        reported: (capacity, level) after the correction, as the server reported them.
        debited: calibrated tokens debited between the previous correction and this one.
        estimated: raw estimates of those requests, less the ones that failed uncharged.

    Returns:
        The new scale, between 1 and :data:`MAX_TOKEN_SCALE`; ``scale`` unchanged when the
        measurement says nothing (a limit change, a nearly full bucket, nothing estimated).
    """
    capacity, level = predicted
    reported_capacity, reported_level = reported
    if estimated <= 0 or capacity != reported_capacity or level >= capacity * FULL:
        return scale
    charged = debited + (level - reported_level)
    target = min(MAX_TOKEN_SCALE, max(1.0, charged / estimated))
    return scale + CALIBRATION_RATE * (target - scale)


TOKEN_429_STEP = 1.03


def raised_for_token_429(scale: float) -> float:
    """Return the token scale after the server refused an attempt for tokens.

    Without rate-limit headers nothing shows what the server charges, except its refusals:
    a ``tokens`` 429 on limits that are known means the estimates run short of its count,
    so each such refusal (of an attempt admitted at the current scale) raises the scale 3%.
    """
    return min(MAX_TOKEN_SCALE, scale * TOKEN_429_STEP)
