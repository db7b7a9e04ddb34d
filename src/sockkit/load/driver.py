"""The event-loop side of ``sockkit load``: one ``BufferedProtocol`` per connection.

Why this shape (the client shares two cores with the server it measures, so its cycles are stolen
from the server): ``BufferedProtocol`` reads straight into one pre-allocated buffer shared by every
connection of the loop (``recv_into``, no ``bytes`` per read); requests are the same pre-built
``bytes`` objects every time; the per-reply work is a few integer operations and one histogram
increment. uvloop is used when installed.

Closed loop (default): each connection sends a request, waits for the whole reply, records the
latency and sends the next. Open loop (``rate``): a ticker issues requests on a fixed schedule,
round-robin over the connections (pipelined: echo replies come back in order), and latency is
measured from the *intended* send time, so a stalled server or client cannot hide its stall by
delaying the measurements (coordinated omission). Open loop with ``churn``: each request due opens
its own connection (at most ``connections`` at once; one due while all are taken waits for a free
one, and the wait counts in its latency), sends, reads the reply and closes -- the load that a
server restart behind a balancer must not fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from time import perf_counter_ns

from sockkit.load.plan import LoadPlan
from sockkit.load.stats import Stats

#: One read at most this big; a bigger reply just takes several reads.
RECEIVE_BUFFER = 1 << 18
#: Wait before reconnecting a connection that failed, so a refused port is not hammered in a busy loop.
RECONNECT_PAUSE = 0.05
#: How often timeouts are checked and progress is reported.
TICK_SECONDS = 0.1
#: Shortest pause of the open-loop scheduler (the loops' timer resolution).
MIN_SLEEP = 0.001

Progress = Callable[[Stats, bool], None]  # (stats so far, measuring) -> None


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Connection:
    """One connection: requests outstanding on it, oldest first, and the reply bytes still due.

    The protocol classes below read into the run's pre-allocated buffer (``BufferedProtocol``: no
    bytes object per read). Measured against ``Protocol.data_received`` with uvloop: the same CPU per
    request for 1 KiB replies, and no 100 KiB copy per read for big ones.
    """

    __slots__ = ("failed", "kinds", "lost", "next_kind", "offset", "run", "sent_at", "transport", "want")

    def __init__(self, run: Run, first_kind: int) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.sent_at: deque[int] = deque()  # send (or intended send) time of each outstanding request, ns
        self.kinds: deque[int] = deque()  # which payload each outstanding request carried
        self.want = 0  # bytes still missing from the oldest reply
        self.offset = 0  # bytes of the oldest reply already checked (line mode / --verify)
        self.next_kind = first_kind
        self.failed = False  # counted already (timeout, wrong reply): connection_lost must not count again
        self.lost: asyncio.Future = run.loop.create_future()

    # -- transport callbacks ----------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost counts unanswered requests

    def connection_lost(self, exc) -> None:
        run = self.run
        if self.kinds and not self.failed:
            if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
                run.stats.reset += 1
            elif isinstance(exc, OSError):
                run.stats.errors += 1
            else:
                run.stats.closed_early += 1
        run.outstanding -= len(self.kinds)
        self.kinds.clear()
        self.sent_at.clear()
        run.live.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)
        run.maybe_finish()

    # -- requests ---------------------------------------------------------------------------------
    def send(self, at_ns: int) -> None:
        run = self.run
        kind = self.next_kind
        self.next_kind = (kind + 1) % run.kinds
        if not self.kinds:
            self.want = run.reply_lengths[kind]
            self.offset = 0
        self.kinds.append(kind)
        self.sent_at.append(at_ns)
        run.outstanding += 1
        self.transport.write(run.payloads[kind])

    def _complete(self) -> None:
        """The oldest outstanding reply is complete: record it, then send the next request if due."""
        run = self.run
        now = time.perf_counter_ns()
        kind = self.kinds.popleft()
        run.latency.record(now - self.sent_at.popleft())
        run.done[kind] += 1
        run.last_reply = now
        self.offset = 0
        if self.kinds:
            self.want = run.reply_lengths[self.kinds[0]]
            run.outstanding -= 1
            return
        self.want = 0
        run.outstanding -= 1
        self._after_reply(now)

    def _after_reply(self, now: int) -> None:
        run = self.run
        if run.churn:
            self.transport.close()  # one request per connection (closed loop: the keeper opens the next)
            return
        if run.closed_loop and run.may_issue():
            self.send(now)
            return
        run.maybe_finish()

    def _check(self, nbytes: int) -> None:
        """Line mode and --verify: every byte must be the one expected at this point of the reply."""
        view = self.run.view
        replies = self.run.reply_views
        pos = 0
        while pos < nbytes:
            if not self.kinds:
                self._fail("wrong_replies")
                return
            expected = replies[self.kinds[0]]
            offset = self.offset
            take = min(nbytes - pos, len(expected) - offset)
            if view[pos:pos + take] != expected[offset:offset + take]:
                self._fail("wrong_replies")
                return
            pos += take
            offset += take
            if offset == len(expected):
                self._complete()
            else:
                self.offset = offset
                self.want = len(expected) - offset

    def _fail(self, counter: str) -> None:
        stats = self.run.stats
        setattr(stats, counter, getattr(stats, counter) + 1)
        self.failed = True
        if self.transport is not None:
            self.transport.abort()


class Client(Connection, asyncio.BufferedProtocol):
    """Any mode: replies read into the run's buffer, counted (raw) or compared byte by byte (line, --verify)."""

    __slots__ = ()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.run.view

    def buffer_updated(self, nbytes: int) -> None:
        if self.run.check:
            self._check(nbytes)
            return
        while nbytes:
            want = self.want
            if nbytes < want:
                self.want = want - nbytes
                return
            if not self.kinds:
                self._fail("wrong_replies")  # bytes nobody asked for
                return
            nbytes -= want
            self._complete()


class SteadyClient(Client):
    """Closed loop, one message size, raw echo, no content check (the benchmark case), inlined.

    Per reply: one clock read, one histogram counter, one write. The one outstanding request's send
    time is overwritten in place (``sent_at[0]``) rather than popped and pushed; the request count is
    the histogram's total. This is ``Client._complete`` + ``Histogram.record`` + ``send`` without the
    calls: each Python call costs about as much as the arithmetic it wraps, and this runs up to
    ~100,000 times a second on a core the server would otherwise have.
    """

    __slots__ = ()

    def buffer_updated(self, nbytes: int) -> None:
        want = self.want - nbytes
        if want > 0:
            self.want = want
            return
        sent_at = self.sent_at
        if want or not sent_at:
            self._fail("wrong_replies")  # more bytes than were sent
            return
        now = perf_counter_ns()
        value = now - sent_at[0]
        shift = value.bit_length() - 8  # histogram.bucket_of, inlined (SUB_BITS = 7)
        run = self.run
        run.counts[value if shift <= 0 else (shift << 7) + (value >> shift)] += 1
        latency = run.latency
        if value > latency.maximum:
            latency.maximum = value
        if value < latency.minimum:
            latency.minimum = value
        if run.unlimited:
            sent_at[0] = now
            self.want = run.reply_length
            self.transport.write(run.payload)
            return
        # Stopping, or a request budget: the general path decides what comes next.
        sent_at.popleft()
        self.kinds.popleft()
        run.outstanding -= 1
        run.last_reply = now
        self.offset = 0
        self.want = 0
        self._after_reply(now)


class Run:
    """One event loop's share of the load: its connections, counters and schedule."""

    def __init__(self, plan: LoadPlan, progress: Progress | None = None,
                 window: Callable[[str], None] | None = None) -> None:
        self.plan = plan
        self.window = window  # told "start" and "end" of the measured window (the bench samples the server)
        self.loop = asyncio.get_running_loop()
        self.stats = Stats()
        self.progress = progress
        self.sizes = list(plan.sizes)
        self.kinds = len(self.sizes)
        self.payloads = plan.payloads()
        replies = plan.replies()
        self.reply_lengths = [len(r) for r in replies]
        self.reply_views = [memoryview(r) for r in replies]
        self.view = memoryview(bytearray(RECEIVE_BUFFER))
        self.check = not plan.raw or plan.verify
        self.closed_loop = plan.rate is None
        self.churn = plan.churn
        self.measuring = plan.warmup <= 0
        self.stopping = False
        self.budget = plan.requests  # requests still to issue in the measured window (None: no limit)
        #: Closed loop with no request budget and not stopping: every reply is followed by a request.
        self.unlimited = self.closed_loop and not plan.churn and plan.requests is None
        self.latency = self.stats.latency
        self.counts = self.latency.counts  # the hot path increments these directly
        self.done = [0] * self.kinds  # replies completed per payload size (general path only)
        self.payload = self.payloads[0]
        self.reply_length = self.reply_lengths[0]
        steady = self.closed_loop and not self.check and self.kinds == 1
        self.protocol = SteadyClient if steady else Client
        self.outstanding = 0
        #: Open-loop churn: requests due whose connection is still being made (not yet outstanding).
        self.connecting = 0
        self.live: set[Client] = set()
        self.finished = self.loop.create_future()
        self.window_start = time.perf_counter_ns()
        self.last_reply = self.window_start
        self.stopped_at = 0  # when the duration ran out (0: not yet)
        self.cpu_start = cpu_seconds()
        self.keepers: list[asyncio.Task] = []
        #: Open-loop churn: one task per request not yet answered.
        self.churning: set[asyncio.Task] = set()

    # -- issuing ----------------------------------------------------------------------------------
    def may_issue(self) -> bool:
        if self.stopping:
            return False
        if self.budget is None or not self.measuring:
            return True
        if self.budget <= 0:
            return False
        self.budget -= 1
        return True

    def maybe_finish(self) -> None:
        done = self.stopping or (self.measuring and self.budget is not None and self.budget <= 0)
        if done and self.outstanding <= 0 and self.connecting <= 0 and not self.finished.done():
            self.finished.set_result(None)

    # -- phases -----------------------------------------------------------------------------------
    def start_measuring(self) -> None:
        self.stats.reset_window()
        self.done[:] = [0] * self.kinds
        self.measuring = True
        self.unlimited = self.unlimited and self.budget is None
        self.window_start = self.last_reply = time.perf_counter_ns()
        self.cpu_start = cpu_seconds()
        if self.window is not None:
            self.window("start")

    def stop(self) -> None:
        self.stopped_at = time.perf_counter_ns()
        self.stopping = True
        self.unlimited = False
        self.maybe_finish()

    async def main(self) -> Stats:
        plan = self.plan
        loop = self.loop
        if plan.warmup > 0:
            loop.call_later(plan.warmup, self.start_measuring)
        elif self.window is not None:
            self.window("start")
        if plan.duration is not None:
            loop.call_later(plan.warmup + plan.duration, self.stop)
        ticker = loop.create_task(self._tick())
        if self.closed_loop or not self.churn:
            self.keepers = [loop.create_task(self._keep_connected(slot)) for slot in range(plan.connections)]
        if not self.closed_loop:
            self.keepers.append(loop.create_task(self._schedule()))
        try:
            await self.finished
        finally:
            # The window ends with the last reply, or when the duration ran out if that is later (the
            # steady path does not note every reply's time; replies in flight at the stop note theirs).
            end = max(self.last_reply, self.stopped_at) if self.latency.total else time.perf_counter_ns()
            self.stats.elapsed = max(0.0, (end - self.window_start) / 1e9)
            self.stats.cpu = cpu_seconds() - self.cpu_start
            self.settle()
            if self.window is not None and self.measuring:
                self.window("end")
            self.stopping = True
            self.unlimited = False
            ticker.cancel()
            tasks = [*self.keepers, *self.churning]
            for task in tasks:
                task.cancel()
            for client in list(self.live):
                if client.transport is not None:
                    client.transport.abort()
            await asyncio.gather(ticker, *tasks, return_exceptions=True)
        return self.stats

    def settle(self) -> Stats:
        """Fold the per-size reply counters into the stats."""
        # Every completed request went through the latency histogram; sizes are counted per kind only
        # when there is more than one.
        self.stats.requests = self.latency.total
        if self.kinds == 1:
            self.stats.bytes = self.stats.requests * self.sizes[0]
        else:
            self.stats.bytes = sum(n * size for n, size in zip(self.done, self.sizes, strict=True))
        return self.stats

    async def _connect(self, kind: int) -> Client | None:
        """One connection to the target, counted in the stats either way; None if it failed."""
        plan = self.plan
        stats = self.stats
        began = time.perf_counter_ns()
        try:
            _, client = await asyncio.wait_for(
                self.loop.create_connection(lambda: self.protocol(self, kind), plan.host, plan.port),
                plan.connect_timeout)
        except ConnectionRefusedError:
            stats.refused += 1
        except (ConnectionResetError, BrokenPipeError):
            stats.reset += 1
        except TimeoutError:
            stats.timeouts += 1
        except OSError:
            stats.errors += 1
        else:
            stats.connect.record(time.perf_counter_ns() - began)
            stats.connects += 1
            self.live.add(client)
            return client
        return None

    async def _keep_connected(self, slot: int) -> None:
        """Hold one connection open for the whole run; reopen it if it drops (churn: after every request)."""
        while not self.stopping:
            client = await self._connect(slot % self.kinds)
            if client is not None:
                if self.closed_loop and client.transport.is_closing():
                    self.stats.closed_early += 1  # the server closed it before the request went out
                elif self.closed_loop and self.may_issue():
                    client.send(time.perf_counter_ns())
                elif self.closed_loop:
                    client.transport.close()
                await client.lost
                if not client.failed and (self.churn or self.stopping):
                    continue
            self.maybe_finish()
            if self._over():
                return
            await asyncio.sleep(RECONNECT_PAUSE)

    def _over(self) -> bool:
        return self.stopping or (self.measuring and self.budget is not None and self.budget <= 0)

    async def _churned(self, due: int, kind: int, slots: asyncio.Semaphore) -> None:
        """Open-loop churn: one request on its own connection, timed from when it was due."""
        client = None
        self.connecting += 1
        try:
            async with slots:
                client = await self._connect(kind)
                if client is not None and client.transport.is_closing():
                    self.stats.closed_early += 1  # the server closed it before the request went out
                elif client is not None:
                    client.send(due)
        finally:
            self.connecting -= 1
        if client is not None:
            await client.lost
        self.maybe_finish()

    async def _schedule(self) -> None:
        """Open loop: request k is due at start + k / rate, whether or not earlier ones came back."""
        interval = 1e9 / self.plan.rate
        deadline = self.loop.time() + self.plan.connect_timeout
        while len(self.live) < self.plan.connections and self.loop.time() < deadline and not self.stopping \
                and not self.churn:
            await asyncio.sleep(0.005)  # the schedule starts once the connections are up (or given up on)
        slots = asyncio.Semaphore(self.plan.connections)
        due = float(time.perf_counter_ns())
        turn = 0
        while not self.stopping:
            now = time.perf_counter_ns()
            live = list(self.live)
            while due <= now and not self.stopping:
                if self.churn:
                    if not self.may_issue():
                        self.maybe_finish()
                        return
                    turn = (turn + 1) % self.kinds
                    task = self.loop.create_task(self._churned(int(due), turn, slots))
                    self.churning.add(task)
                    task.add_done_callback(self.churning.discard)
                elif not live:
                    self.stats.errors += 1  # nowhere to send it: the request is lost, and counted
                elif self.may_issue():
                    turn = (turn + 1) % len(live)
                    live[turn].send(int(due))
                else:
                    self.maybe_finish()
                    return
                due += interval
            # Timers tick in whole milliseconds (libuv): sleeping less would spin and steal the server's CPU.
            # A request sent late is still timed from when it was due.
            await asyncio.sleep(max(MIN_SLEEP, (due - time.perf_counter_ns()) / 1e9))

    async def _tick(self) -> None:
        """Drop connections whose oldest reply is overdue; report progress."""
        limit = int(self.plan.timeout * 1e9)
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.perf_counter_ns()
            for client in list(self.live):
                if client.sent_at and now - client.sent_at[0] > limit and not client.failed:
                    client._fail("timeouts")
            if self.progress is not None:
                self.progress(self.settle(), self.measuring)


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def drive(plan: LoadPlan, progress: Progress | None = None,
          window: Callable[[str], None] | None = None) -> tuple[Stats, bool]:
    """Run ``plan`` in this process on a fresh loop; (stats, cut short by the wall-clock cap).

    Ctrl-C stops the run at once (connections aborted) and then raises KeyboardInterrupt here: left to
    Python's default handler, the interrupt would land inside a protocol callback, where the loop
    reports it as a transport error and carries on.
    """
    loop = new_loop(plan.loop)
    holder: dict[str, Run] = {}
    interrupted = []

    def on_interrupt() -> None:
        interrupted.append(True)
        run = holder.get("run")
        if run is not None and not run.finished.done():
            run.finished.set_result(None)

    async def main() -> Stats:
        holder["run"] = Run(plan, progress, window)
        return await holder["run"].main()

    handled = False
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, on_interrupt)
            handled = True
    try:
        stats, cut = loop.run_until_complete(asyncio.wait_for(main(), plan.wall_limit)), False
    except TimeoutError:
        run = holder.get("run")
        stats, cut = (run.stats if run else Stats()), True
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGINT)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    if interrupted:
        raise KeyboardInterrupt
    return stats, cut
