"""The project's error types.

Two families matter to a running node (h11's split): an error that means *we* misused an API is a bug
and must surface; an error caused by bad input (a config file, the CLI, a peer's bytes, a caller's
arguments) is an operating error with a message that names the problem. Every error the project raises
on purpose derives from `QoraError`, so a caller can catch all of them without catching real bugs.
"""

from __future__ import annotations

__all__ = ["AggregationError", "FixedPointError", "QoraError"]


class QoraError(Exception):
    """Base of every error qora-p2p raises on purpose."""


class FixedPointError(QoraError, ValueError):
    """A value cannot be encoded in, or decoded from, the fixed-point wire format."""


class AggregationError(QoraError, ValueError):
    """`aggregate` was given input it cannot use, or a rule's precondition does not hold."""
