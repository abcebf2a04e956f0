"""Building ``diagnostic_msgs/DiagnosticArray`` messages from plain values (STYLE.md item 16)."""
from __future__ import annotations

from collections.abc import Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from dreamzero_policy.conversions import ns_to_stamp

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def diagnostic_array(t_ns: int, name: str, hardware_id: str, level: bytes, message: str,
                     values: Mapping[str, object]) -> DiagnosticArray:
    """One status named ``name`` with ``values`` as key/value strings (floats with 4 significant digits)."""
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=f"{v:.4g}" if isinstance(v, float) else str(v))
                                      for k, v in values.items()])
    array = DiagnosticArray(status=[status])
    array.header.stamp = ns_to_stamp(t_ns)
    return array
