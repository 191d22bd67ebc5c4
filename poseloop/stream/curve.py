"""CURVE keys: load them, make a socket a CURVE server with a ZAP key check, or a client.

Keys are Z85 text (40 characters). Certificate files are ZeroMQ's format, as written by
``zmq.auth.create_certificates(folder, name)``: ``name.key`` (public) and
``name.key_secret`` (public and secret).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from poseloop.errors import ConfigError
from poseloop.stream.config import CurveConfig


def _z85_key(text: str) -> bytes | None:
    """The key if ``text`` is a 40-character Z85 key, else None."""
    if len(text) != 40:
        return None
    try:
        return text.encode() if len(z85.decode(text.encode())) == 32 else None
    except (ValueError, KeyError, UnicodeEncodeError):
        return None


def _public_key(path: Path, field: str) -> bytes:
    """The public key of a certificate file."""
    return _certificate(path, field)[0]


def _key_pair(path: Path, field: str) -> tuple[bytes, bytes]:
    """(public, secret) of a ``.key_secret`` certificate file."""
    public, secret = _certificate(path, field)
    if secret is None:
        raise ConfigError(f"stream field '{field}': {path} holds no secret key; use the "
                          ".key_secret file")
    return public, secret


def _certificate(path: Path, field: str) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"stream field '{field}': cannot read certificate {path}: {e}") from e


def public_keys(values: list[str], field: str = "curve.client_public_keys") -> set[bytes]:
    """Z85 public keys from keys, certificate files and folders of ``*.key`` files."""
    keys: set[bytes] = set()
    for value in values:
        key = _z85_key(value)
        path = Path(value).expanduser()
        if key is not None and not path.exists():
            keys.add(key)
        elif path.is_dir():
            found = sorted(path.glob("*.key"))
            if not found:
                raise ConfigError(f"stream field '{field}': no *.key files in {path}")
            keys.update(_public_key(p, field) for p in found)
        elif path.is_file():
            keys.add(_public_key(path, field))
        else:
            raise ConfigError(f"stream field '{field}': {value!r} is neither a Z85 key "
                              "(40 characters) nor an existing certificate file or folder")
    return keys


class _AllowedKeys:
    """ZAP credentials provider: a client may connect if its public key is in the set."""

    def __init__(self, keys: set[bytes]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


def make_server(
    ctx: zmq.Context, socket: zmq.Socket, curve: CurveConfig
) -> tuple[ThreadAuthenticator, bytes]:
    """Turn ``socket`` (not yet bound) into a CURVE server that admits only the allowed keys.

    Returns the authenticator thread that answers the handshakes (stop it when the socket
    is closed) and the server's public key (what clients need).
    """
    allowed = public_keys(curve.client_public_keys)
    if curve.server_secret_key is None:
        public, secret = zmq.curve_keypair()
    else:
        public, secret = _key_pair(
            Path(curve.server_secret_key).expanduser(), "curve.server_secret_key"
        )
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback("*", _AllowedKeys(allowed))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return auth, public


@dataclass(frozen=True)
class CurveClient:
    """What a subscriber needs to reach a CURVE publisher (all Z85 keys)."""

    server_public_key: bytes
    public_key: bytes
    secret_key: bytes

    @classmethod
    def load(cls, server_public_key: str, client_secret_key: str) -> CurveClient:
        """From the server's public key (Z85 or certificate file) and the client's
        ``.key_secret`` certificate file."""
        server = public_keys([server_public_key], "server_public_key")
        if len(server) != 1:
            raise ConfigError(f"server_public_key: expected one key, {server_public_key!r} "
                              f"holds {len(server)}")
        public, secret = _key_pair(Path(client_secret_key).expanduser(), "client_secret_key")
        return cls(server.pop(), public, secret)

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` (not yet connected) a CURVE client of the server."""
        socket.curve_serverkey = self.server_public_key
        socket.curve_publickey = self.public_key
        socket.curve_secretkey = self.secret_key
