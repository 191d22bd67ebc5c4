"""Poses to other experiment software: ZeroMQ (publisher, subscriber, wire format) and Lab
Streaming Layer outlets.

See docs/wire-format.md for the format any language can read.
"""

from poseloop.stream.config import CurveConfig, StreamConfig
from poseloop.stream.curve import CurveClient
from poseloop.stream.lsl import LslConfig, LslSink
from poseloop.stream.publisher import PosePublisher
from poseloop.stream.subscriber import PoseSubscriber
from poseloop.stream.wire import CameraMeta, EventMessage, Meta, PoseMessage, WireError

__all__ = [
    "CameraMeta",
    "CurveClient",
    "CurveConfig",
    "EventMessage",
    "LslConfig",
    "LslSink",
    "Meta",
    "PoseMessage",
    "PosePublisher",
    "PoseSubscriber",
    "StreamConfig",
    "WireError",
]
