"""The load tester behind ``sockkit load``: a histogram, an asyncio/uvloop driver, a runner that forks.

``histogram``  log-linear latency buckets, mergeable across processes, percentiles within 1/128.
``plan``       what to send (sizes, payloads, expected replies) and how long: a frozen ``LoadPlan``.
``driver``     the event-loop side: one Protocol per connection, closed or open loop.
``runner``     forks ``--processes`` workers, merges their results, caps wall-clock time.
``report``     the human table, the live progress line and the JSON document.
"""
