"""Testing tools for throttle's users: a simulated OpenAI API and a hand-driven clock.

``throttle.testing.redis_server`` starts a real redis-server on a loopback port, and
``throttle.testing.prometheus_server`` a real Prometheus that scrapes loopback targets.
"""

from throttle.testing.manual_clock import ManualClock
from throttle.testing.sim_batch_config import BatchSettings
from throttle.testing.sim_config import Faults, LimitChange, ModelLimits, SimulatorConfig
from throttle.testing.sim_handler import FAULTS
from throttle.testing.sim_stats import BatchStats, SimulatorStats
from throttle.testing.simulator import SimulatedAPI
from throttle.testing.watch import InFlightWatch

__all__ = [  # noqa: RUF022 - plain sorted order, which test_public_api asserts
    "BatchSettings",
    "BatchStats",
    "FAULTS",
    "Faults",
    "InFlightWatch",
    "LimitChange",
    "ManualClock",
    "ModelLimits",
    "SimulatedAPI",
    "SimulatorConfig",
    "SimulatorStats",
]
