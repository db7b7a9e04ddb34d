"""The getfile service (docs/getfile-protocol.md): files under one root, safely, to any model."""

from sockkit.services.getfile.root import Refused, ServedRoot
from sockkit.services.getfile.service import DEFAULT_MAX_TRANSFERS, GetfileService

__all__ = ["DEFAULT_MAX_TRANSFERS", "GetfileService", "Refused", "ServedRoot"]
