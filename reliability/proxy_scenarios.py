"""Behind a balancer: the PROXY protocol reader and the fault proxy (``sockkit proxy``) under attack."""

from __future__ import annotations

from reliability.suite import Row, Scale, run_atheris, scenario


@scenario("fuzz-proxy-header", "atheris feeds random bytes (with the protocol's tokens), whole and cut at random, "
          "to the PROXY v1/v2 header reader for 20 s (long: 300 s): only a clean refusal, a bounded buffer, the same "
          "answer however TCP splits the bytes, every accepted header written back the same", ["sans-IO"])
def fuzz_proxy_header(model: str, scale: Scale) -> Row:
    return run_atheris("fuzz-proxy-header", "reliability.fuzz_proxy_header", model, scale)
