"""A TCP proxy that injects faults (latency, jitter, rate limits, slicing, stalls, closes, resets).

``faults`` is the sans-IO schedule; ``relay`` the asyncio engine; ``sockkit proxy`` the command.
"""

from sockkit.proxy.faults import Faults, ProxyFaults
from sockkit.proxy.relay import ConnectionReport, DirectionReport, FaultProxy, FaultProxyThread

__all__ = ["ConnectionReport", "DirectionReport", "FaultProxy", "FaultProxyThread", "Faults", "ProxyFaults"]
