"""LslSink: the ``lsl`` sink, poses and rule actions as Lab Streaming Layer streams.

LSL is how neuroscience rigs share data streams with acquisition software (LabRecorder,
EEG and electrophysiology systems): one outlet per stream, found by name on the network,
every sample stamped on LSL's clock, so recordings from several programs line up. This
sink makes one outlet of N*K*3 float32 channels (x, y, likelihood in pixels of every
bodypart of every individual, then U*3 for unique bodyparts; N*K*4 and U*4, x, y, z,
likelihood in world units (mm), for triangulated 3D poses) at the camera's frame rate,
each sample stamped with the frame's capture time; and, unless ``markers: false``, a
string marker outlet with one JSON sample per rule action.

Network: liblsl discovers streams with UDP multicast and broadcast on the local network.
By default (``network: machine``) poseloop configures liblsl to stay on this computer:
discovery only over 127.0.0.1 and its discovery responders listening on 127.0.0.1, IPv6
off, no known peers; liblsl then sends nothing past loopback, and programs elsewhere cannot
find the streams (its data and time-sync ports still listen on every address: liblsl has no
setting for them, so a firewall is what keeps a known port closed). ``network: lab`` hands
the choice to liblsl's own configuration (``config_file``, or the usual lsl_api.cfg
search), for a LabRecorder on another computer. liblsl reads that configuration once per
process, before its first stream, so every LSL sink of one process must agree on it.

pylsl is optional (``pip install 'poseloop[lsl]'``): it is imported when the sink is built.
"""

from __future__ import annotations

import configparser
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from poseloop.config import Strict
from poseloop.errors import ConfigError
from poseloop.realtime.sinks import SINKS
from poseloop.realtime.types import (
    COORDS_3D,
    UNIQUE_INDIVIDUAL,
    ActionRecord,
    Frame,
    Pose,
    Session,
)

if TYPE_CHECKING:
    import pylsl

#: liblsl configuration (lsl_api.cfg syntax) that keeps every LSL packet on this machine.
LOOPBACK_CONFIG = """\
[ports]
IPv6 = disable

[multicast]
ResolveScope = machine
MachineAddresses = {127.0.0.1}
ListenAddress = 127.0.0.1

[lab]
KnownPeers = {}

[log]
level = -2
"""

#: Per coordinate of ``Session.coords``: its LSL channel type (XDF MoCap convention).
CHANNEL_TYPES = {"x": "PositionX", "y": "PositionY", "z": "PositionZ",
                 "likelihood": "Confidence"}
#: The unit of positions: full-frame pixels in 2D, the calibration's world units in 3D.
UNIT_2D, UNIT_3D = "pixels", "mm"

#: The network configuration liblsl was given in this process (it reads it once).
_applied: str | None = None


class LslConfig(Strict):
    """The ``lsl:`` section: Lab Streaming Layer outlets for poses and rule actions."""

    name: str = Field(default="poseloop", min_length=1, description="name of the pose stream")
    type: str = Field(
        default="MoCap", min_length=1, description="LSL content type of the pose stream"
    )
    source_id: str | None = Field(
        default=None,
        description="unique id that lets inlets reconnect after a restart; None = "
        "'poseloop:<name>'",
    )
    markers: bool = Field(
        default=True,
        description="also a string stream '<name>_markers' (type 'Markers') with one JSON "
        "sample per rule action",
    )
    network: Literal["machine", "lab"] = Field(
        default="machine",
        description="machine: streams visible to programs on this computer only, no LSL "
        "traffic past loopback; lab: liblsl's own configuration (config_file, or LSLAPICFG, "
        "./lsl_api.cfg, ~/lsl_api/lsl_api.cfg, /etc/lsl_api/lsl_api.cfg; without one, "
        "discoverable on the local network)",
    )
    config_file: str | None = Field(
        default=None,
        description="with network: lab, the lsl_api.cfg to use (KnownPeers, ResolveScope, "
        "SessionID, ...)",
    )
    max_buffered_s: int = Field(
        default=360,
        ge=1,
        description="seconds of samples the outlet keeps for a slow inlet before it drops "
        "the oldest",
    )
    wait_for_consumers_s: float = Field(
        default=0.0,
        ge=0,
        description="at start, wait up to this long for an inlet (e.g. LabRecorder) to "
        "connect, so it records from the first frame",
    )

    @model_validator(mode="after")
    def _network(self) -> LslConfig:
        if self.config_file is not None and self.network != "lab":
            raise ValueError("config_file is liblsl's network configuration: it needs "
                             "network: lab")
        return self


def _import_pylsl() -> Any:
    try:
        import pylsl
    except (ImportError, RuntimeError, OSError) as e:
        raise ConfigError(f"lsl: the Lab Streaming Layer sink needs pylsl and its liblsl "
                          f"(pip install 'poseloop[lsl]'): {e}") from None
    return pylsl


def _network_config(config: LslConfig) -> str:
    """The liblsl configuration text for ``config`` ('' = liblsl's own search)."""
    if config.network == "machine":
        return LOOPBACK_CONFIG
    if config.config_file is None:
        return ""
    path = Path(config.config_file).expanduser()
    try:
        text = path.read_text()
        configparser.ConfigParser(strict=False, interpolation=None).read_string(text)
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        raise ConfigError(f"lsl field 'config_file': cannot read {path} as an lsl_api.cfg: "
                          f"{e}") from None
    return text


def _configure(pylsl: Any, text: str) -> None:
    """Give liblsl its network configuration, once per process."""
    global _applied
    if _applied is None:
        if text:
            try:
                pylsl.set_config_content(text)
            except NotImplementedError as e:  # a liblsl older than 1.17.7
                raise ConfigError(f"lsl: {e}; upgrade pylsl (pip install 'poseloop[lsl]') or "
                                  "set network: lab") from None
        _applied = text
    elif _applied != text:
        raise ConfigError("lsl: liblsl reads its network configuration once per process, and "
                          "this process already started LSL with another network/config_file;"
                          " run each configuration in its own process")


def _same_clock() -> bool:
    """True where perf_counter and liblsl's clock (C++ steady_clock) are both
    CLOCK_MONOTONIC: Linux."""
    perf = time.get_clock_info("perf_counter").implementation
    return sys.platform.startswith("linux") and perf == "clock_gettime(CLOCK_MONOTONIC)"


def measure_offset_ns(local_clock: Callable[[], float], tries: int = 20) -> int:
    """LSL clock - perf_counter in ns, from the tightest bracket of one perf_counter read."""
    brackets = []
    for _ in range(tries):
        a = local_clock()
        p = time.perf_counter_ns()
        b = local_clock()
        brackets.append((b - a, round((a + b) / 2 * 1e9) - p))
    return min(brackets)[1]


def position_unit(session: Session) -> str:
    """The unit of the session's x, y (and z): pixels, or mm for triangulated 3D poses."""
    return UNIT_3D if session.coords == COORDS_3D else UNIT_2D


def channel_labels(session: Session) -> list[tuple[str, str, str, str, str]]:
    """(label, individual, bodypart, LSL channel type, unit) per channel, in sample order.

    Labels are ``bodypart_x`` for a single-animal model, ``individual_bodypart_x`` for a
    multi-animal one, and ``single_bodypart_x`` for unique bodyparts (DeepLabCut's name);
    one per coordinate of ``session.coords`` (x, y, likelihood; or x, y, z, likelihood).
    """
    named = session.multi_animal or len(session.individuals) > 1
    rows = [(individual, bodypart, named)
            for individual in session.individuals for bodypart in session.bodyparts]
    rows += [(UNIQUE_INDIVIDUAL, bodypart, True) for bodypart in session.unique_bodyparts]
    unit = position_unit(session)
    labels = []
    for individual, bodypart, prefixed in rows:
        prefix = f"{individual}_" if prefixed else ""
        for coord in session.coords:
            labels.append((f"{prefix}{bodypart}_{coord}", individual, bodypart,
                           CHANNEL_TYPES[coord], "probability" if coord == "likelihood" else unit))
    return labels


@SINKS.register("lsl", LslConfig)
class LslSink:
    """The ``lsl`` sink: pushes every pose (and action) to LSL outlets; never blocks.

    ``pose`` copies the points into one reused sample and pushes it stamped with the
    frame's capture time on LSL's clock (``pylsl.local_clock``); liblsl queues it for each
    connected inlet and returns. ``sent`` counts samples per stream (``pose``, ``event``).
    ``dropped`` is 0: an outlet cannot see what a slow inlet loses beyond
    ``max_buffered_s``.
    """

    name = "lsl"

    def __init__(self, config: LslConfig | None = None) -> None:
        self.config = config = LslConfig() if config is None else config
        self._lsl = _import_pylsl()
        _configure(self._lsl, _network_config(config))
        self.source_id = config.source_id or f"poseloop:{config.name}"
        self.sent: Counter[str] = Counter()
        #: LSL clock - perf_counter, ns (0 where they are one clock); set at open.
        self.offset_ns = 0
        self._outlet: pylsl.StreamOutlet | None = None
        self._markers: pylsl.StreamOutlet | None = None
        self._sample = np.empty((1, 0), np.float32)
        self._points = self._sample[0, :0].reshape(0, 0, 3)
        self._unique = self._sample[0, :0].reshape(0, 3)

    def open(self, session: Session) -> None:
        """Create the outlets (channels named from the session, rate = the camera's)."""
        if self._outlet is not None:
            raise RuntimeError(f"lsl outlet {self.config.name!r} is already open")
        lsl, config = self._lsl, self.config
        n, k, c = session.shape
        u = len(session.unique_bodyparts)
        labels = channel_labels(session)
        self._sample = np.full((1, len(labels)), np.nan, np.float32)
        self._points = self._sample[0, : n * k * c].reshape(n, k, c)
        self._unique = self._sample[0, n * k * c:].reshape(u, c)
        info = lsl.StreamInfo(config.name, config.type, len(labels), float(session.fps),
                              lsl.cf_float32, self.source_id)
        self._describe(info, session, labels)
        self.offset_ns = 0 if _same_clock() else measure_offset_ns(lsl.local_clock)
        self._outlet = lsl.StreamOutlet(info, 0, config.max_buffered_s)
        if config.markers:
            markers = lsl.StreamInfo(f"{config.name}_markers", "Markers", 1,
                                     lsl.IRREGULAR_RATE, lsl.cf_string,
                                     f"{self.source_id}_markers")
            desc = markers.desc()
            desc.append_child_value("format", "json: frame, rule, action")
            desc.append_child_value("pose_stream", config.name)
            self._markers = lsl.StreamOutlet(markers, 0, config.max_buffered_s)
        if config.wait_for_consumers_s:
            self.wait_for_consumers(config.wait_for_consumers_s)

    def wait_for_consumers(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until an inlet is connected to the pose outlet."""
        if self._outlet is None:
            raise RuntimeError("open the lsl sink first")
        return bool(self._outlet.wait_for_consumers(timeout))

    def pose(self, pose: Pose, frame: Frame | None = None) -> None:
        """Push ``pose`` as one sample stamped with its capture time on LSL's clock."""
        outlet = self._outlet
        if outlet is None:
            raise RuntimeError("open the lsl sink first")
        if pose.points.shape != self._points.shape:
            raise ValueError(f"lsl: pose of frame {pose.frame_index} has shape "
                             f"{pose.points.shape}, the stream was opened for "
                             f"{self._points.shape}")
        np.copyto(self._points, pose.points, casting="same_kind")
        if len(self._unique):
            if pose.unique is None:
                self._unique.fill(np.nan)
            elif pose.unique.shape != self._unique.shape:
                raise ValueError(f"lsl: unique bodyparts of frame {pose.frame_index} have shape "
                                 f"{pose.unique.shape}, the stream was opened for "
                                 f"{self._unique.shape}")
            else:
                np.copyto(self._unique, pose.unique, casting="same_kind")
        outlet.push_chunk(self._sample, (pose.t_capture_ns + self.offset_ns) / 1e9)
        self.sent["pose"] += 1

    def event(self, action: ActionRecord) -> None:
        """Push the action as a JSON marker stamped with its time on LSL's clock."""
        if self._markers is None:
            return
        label = json.dumps({"frame": action.frame, "rule": action.rule,
                            "action": action.action,
                            "animals": action.animals.split(",") if action.animals else []},
                           ensure_ascii=False)
        self._markers.push_sample([label], (action.t_ns + self.offset_ns) / 1e9)
        self.sent["event"] += 1

    @property
    def dropped(self) -> int:
        """Always 0: liblsl drops a slow inlet's oldest samples where the outlet cannot see."""
        return 0

    @property
    def fatal(self) -> str | None:
        """Always None: LSL never needs to stop the run."""
        return None

    def close(self) -> None:
        """Destroy the outlets (inlets see the streams end); idempotent."""
        self._outlet = self._markers = None

    def _describe(self, info: Any, session: Session,
                  labels: list[tuple[str, str, str, str, str]]) -> None:
        """Channel labels and the model's layout in the stream's XML ``desc``."""
        desc = info.desc()
        channels = desc.append_child("channels")
        for label, individual, bodypart, kind, unit in labels:
            channel = channels.append_child("channel")
            channel.append_child_value("label", label)
            channel.append_child_value("marker", bodypart)
            channel.append_child_value("individual", individual)
            channel.append_child_value("type", kind)
            channel.append_child_value("unit", unit)
        acquisition = desc.append_child("acquisition")
        acquisition.append_child_value("manufacturer", "poseloop")
        acquisition.append_child_value("model", session.model)
        setup = desc.append_child("setup")
        w, h = session.image_size
        setup.append_child_value("image_size", f"{w}x{h}")
        setup.append_child_value("multi_animal", str(session.multi_animal).lower())
        setup.append_child_value("dims", str(session.dims))
        setup.append_child_value("unit", position_unit(session))
        cameras = setup.append_child("cameras")
        for camera in session.cameras:
            node = cameras.append_child("camera")
            node.append_child_value("name", camera.name)
            node.append_child_value("image_size", f"{camera.width}x{camera.height}")
        for tag, names in (("individuals", session.individuals),
                           ("bodyparts", session.bodyparts),
                           ("unique_bodyparts", session.unique_bodyparts)):
            node = setup.append_child(tag)
            for name in names:
                node.append_child_value(tag.removesuffix("s"), name)
        skeleton = setup.append_child("skeleton")
        for a, b in session.skeleton:
            edge = skeleton.append_child("edge")
            edge.append_child_value("from", a)
            edge.append_child_value("to", b)
