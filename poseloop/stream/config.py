"""Publisher options, and the rule that only loopback may be served without CURVE keys."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, model_validator

from poseloop.config import Strict
from poseloop.errors import ConfigError

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
LOCAL_TRANSPORTS = ("ipc", "inproc")  # never leave the host


class CurveConfig(Strict):
    """CURVE encryption and client authentication for a publisher reachable from the network."""

    server_secret_key: str | None = Field(
        default=None,
        description="ZeroMQ certificate file with the server's secret key (written by "
        "zmq.auth.create_certificates as <name>.key_secret); None = a new key pair at every "
        "start (clients then need the publisher's public_key each time)",
    )
    client_public_keys: list[str] = Field(
        default=...,
        min_length=1,
        description="clients allowed to connect: each a Z85 public key (40 characters), a "
        "certificate file, or a folder of *.key certificate files",
    )


class StreamConfig(Strict):
    """Where and how poses are published (ZeroMQ, see docs/wire-format.md)."""

    endpoint: str = Field(default=DEFAULT_ENDPOINT, description="ZeroMQ address to bind")
    hwm: int = Field(
        default=1000, ge=1, description="messages queued per subscriber before dropping"
    )
    on_full_queue: Literal["skip_subscriber", "drop_message"] = Field(
        default="skip_subscriber",
        description="skip_subscriber: a subscriber whose queue is full misses messages, the "
        "others still get them; drop_message: the message is dropped for every subscriber "
        "(exact drop counts, but one stalled subscriber stops the stream for all)",
    )
    curve: CurveConfig | None = Field(
        default=None, description="required for non-loopback endpoints"
    )
    allow_insecure: bool = Field(
        default=False,
        description="publish unencrypted on a non-loopback endpoint (anyone can read)",
    )

    @model_validator(mode="after")
    def _exposure(self) -> StreamConfig:
        """Refuse a network endpoint without keys when the config is read, not at start."""
        try:
            check_exposure(self.endpoint, self.curve, self.allow_insecure)
        except ConfigError as e:
            raise ValueError(str(e).removeprefix("stream field ")) from None
        return self


def is_loopback(endpoint: str) -> bool:
    """True if ``endpoint`` can only be reached from this host (loopback TCP, ipc, inproc)."""
    transport, sep, address = endpoint.partition("://")
    if not sep:
        raise ConfigError(f"stream endpoint {endpoint!r} is not a ZeroMQ address like "
                          f"{DEFAULT_ENDPOINT!r}")
    if transport in LOCAL_TRANSPORTS:
        return True
    if transport != "tcp":
        return False
    host = address.rpartition(":")[0].removeprefix("[").removesuffix("]")
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", a host or interface name: reachable from outside
        return False


def check_exposure(endpoint: str, curve: CurveConfig | None, allow_insecure: bool) -> None:
    """Refuse a non-loopback endpoint without CURVE keys unless ``allow_insecure`` says so."""
    if curve is None and not allow_insecure and not is_loopback(endpoint):
        raise ConfigError(
            f"stream field 'curve': endpoint {endpoint!r} is reachable from other machines, "
            "so poses must be encrypted: set curve.client_public_keys (and "
            "curve.server_secret_key) as described in docs/wire-format.md, bind "
            f"{DEFAULT_ENDPOINT!r} instead, or set allow_insecure: true"
        )
