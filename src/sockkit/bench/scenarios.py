"""The loads of the shoot-out (issue 5), each run against every target that can take it."""

from __future__ import annotations

from dataclasses import dataclass

from sockkit.catalog import MODELS

#: Models that cannot take a scenario, and why (shown in the table notes), found by their traits.
SEQUENTIAL_WHY = "serves one client at a time: the other connections would only time out"
FORK_IDLE_WHY = "a process per idle client: not attempted at this count"
POOL_IDLE_WHY = "a worker stays with its client until it leaves: idle clients hold every worker"
ONE_AT_A_TIME = tuple((name, SEQUENTIAL_WHY) for name, model in MODELS.items() if not model.concurrent)
WORKER_PER_CLIENT = tuple((name, POOL_IDLE_WHY) for name, model in MODELS.items() if model.workers == "threads")
FORK_PER_CLIENT = tuple(name for name, model in MODELS.items() if model.fork_per_client)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    connections: int = 10
    size: int = 1024
    delay: float = 0.0
    #: Idle connections opened (and kept silent) before the measured ones start.
    idle: int = 0
    churn: bool = False
    #: The headline: repeated --runs times (median reported); the others run --other-runs times.
    headline: bool = False
    #: Targets that sit this one out, with the reason.
    skip: tuple[tuple[str, str], ...] = ONE_AT_A_TIME
    peers: bool = True

    def skipped(self, target: str) -> str | None:
        return dict(self.skip).get(target)


NO_PEERS_WHY = "the peers are bare echoes without --delay-each"
IDLE_SKIP = (*ONE_AT_A_TIME, *WORKER_PER_CLIENT,
             ("socketserver", "ThreadingTCPServer, the same as the thread model and its peer"),
             ("threading-tcpserver-1cpu", "shown for the active-connection scenarios only"))

SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("short", "10 connections x 1 KiB", headline=True),
    Scenario("one", "1 connection x 1 KiB", connections=1, skip=()),
    Scenario("hundred", "100 connections x 1 KiB", connections=100),
    Scenario("large", "10 connections x 100 KiB", size=100 * 1024),
    Scenario("slow", "50 connections, --delay-each 0.05", connections=50, delay=0.05, peers=False),
    Scenario("idle1k", "1,000 idle + 10 active connections", idle=1000,
             skip=(*IDLE_SKIP, ("fork-signal", "same as fork"))),
    Scenario("idle10k", "10,000 idle + 10 active connections", idle=10_000,
             skip=(*IDLE_SKIP, *((name, FORK_IDLE_WHY) for name in FORK_PER_CLIENT),
                   ("asyncio-streams", "a coroutine per connection: covered by bare-asyncio"))),
    Scenario("churn", "a new connection per request, 10 at a time", churn=True),
]}
