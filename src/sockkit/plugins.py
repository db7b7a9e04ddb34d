"""Services from outside sockkit: ``MODULE:ATTRIBUTE`` targets and the ``sockkit.services``
entry-point group, turned into the same ``ServiceSpec`` the built-in services have.

A target is a ``Service`` or a factory: a callable taking the parsed options (an
``argparse.Namespace``) -- or nothing -- and returning one. A factory may carry
``add_arguments(parser)`` to add options of its own, and either may declare ``default_port``.
Rule: loading a target never runs a server; a target that cannot be loaded or built is a
``ValueError`` naming it, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from sockkit.catalog import ServiceSpec
from sockkit.services.actions import Service

GROUP = "sockkit.services"


def is_target(text: str) -> bool:
    """``MODULE:ATTRIBUTE``, as opposed to a service name."""
    module, colon, attribute = text.partition(":")
    return bool(colon and module and attribute)


def load_target(text: str) -> Any:
    """The object ``MODULE:ATTRIBUTE`` names, importing MODULE with the current directory on the
    path (as ``python -m`` and uvicorn do), so a service in a file beside the user runs."""
    module_name, _, attribute = text.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot load service {text}: {exc}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(f"cannot load service {text}: module {module_name} has no {attribute}") from None
    return found


def is_service(thing: Any) -> bool:
    return not isinstance(thing, type) and callable(getattr(thing, "connect", None))


def build(target: Any, options: argparse.Namespace, where: str) -> Service:
    """The service ``target`` is, or makes from ``options``."""
    if is_service(target):
        return target
    if not callable(target):
        raise ValueError(f"{where} is neither a service (no connect method) nor a factory making one")
    try:
        takes_options = bool(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        takes_options = True
    service = target(options) if takes_options else target()
    if not is_service(service):
        raise ValueError(f"{where} returned {type(service).__name__}, not a service (no connect method)")
    return service


def summary(target: Any, where: str) -> str:
    """One line for ``--help`` and ``--list``: the target's ``help`` attribute or docstring's first line."""
    text = getattr(target, "help", None) or inspect.getdoc(target) or ""
    return text.strip().splitlines()[0] if text.strip() else f"the service {where}"


def spec_for(target: Any, name: str, where: str) -> ServiceSpec:
    """A ``ServiceSpec`` for an outside ``target`` (named ``name`` on the command line)."""
    add_arguments = getattr(target, "add_arguments", None) if not is_service(target) else None
    return ServiceSpec(name=name, help=summary(target, where), default_port=getattr(target, "default_port", 0),
                       add_arguments=add_arguments or (lambda parser: None),
                       build=lambda options: build(target, options, where))


def installed() -> dict[str, EntryPoint]:
    """Services that installed packages register in the ``sockkit.services`` group, by name."""
    return {point.name: point for point in entry_points(group=GROUP)}


def origin(point: EntryPoint) -> str:
    """Which package registered ``point``: ``NAME VERSION``."""
    dist = point.dist
    return f"{dist.name} {dist.version}" if dist is not None else point.value
