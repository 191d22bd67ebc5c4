"""Security (issue 6): the stream stays on this host unless configured, YAML and torch files
cannot run code. CURVE authentication (a client without the key receives nothing) is tested
in test_stream.py::test_curve_admits_only_listed_clients.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from poseloop.config import TrainConfig, load_yaml
from poseloop.errors import ConfigError, ModelError, ProjectError, WeightsError
from poseloop.realtime.engine_config import EngineConfig, load_engine_config
from poseloop.realtime.types import CameraInfo, Session
from poseloop.stream.config import DEFAULT_ENDPOINT, StreamConfig
from poseloop.stream.publisher import PosePublisher


def _other_address() -> str:
    """An IPv4 address of this host that is not loopback, or skip."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address = s.getsockname()[0]
        except OSError:
            address = ""
    if not address or address.startswith("127."):
        pytest.skip("this host has no non-loopback IPv4 address")
    return address


def test_the_default_stream_is_reachable_from_this_host_only() -> None:
    section = load_engine_config({"stream": {}}).sinks["stream"]
    assert isinstance(section, StreamConfig)
    assert StreamConfig().endpoint == DEFAULT_ENDPOINT == section.endpoint
    other = _other_address()
    publisher = PosePublisher(StreamConfig(endpoint="tcp://127.0.0.1:*"))
    try:
        publisher.open(Session(bodyparts=("snout",), cameras=(CameraInfo(64, 48, 30.0),)))
        port = int(publisher.endpoint.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # loopback: open
        with pytest.raises(OSError), socket.create_connection((other, port), timeout=2):
            pass  # the host's network address: refused
    finally:
        publisher.close()


def test_a_network_endpoint_needs_keys_or_explicit_consent() -> None:
    with pytest.raises(ConfigError, match="curve"):
        load_engine_config({"stream": {"endpoint": "tcp://0.0.0.0:5555"}})
    cfg = load_engine_config({"stream": {"endpoint": "tcp://0.0.0.0:5555",
                                         "allow_insecure": True}})
    section = cfg.sinks["stream"]
    assert isinstance(section, StreamConfig) and section.allow_insecure


UNSAFE = "!!python/object/apply:os.system ['touch {marker}']\n"


@pytest.mark.parametrize("kind", ["engine", "train", "project"])
def test_yaml_cannot_run_code(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    payload = UNSAFE.format(marker=marker)
    path = tmp_path / ("config.yaml" if kind == "project" else "run.yaml")
    if kind == "project":
        from poseloop.project import read_project

        path.write_text(f"Task: x\nbodyparts: {payload}")
        with pytest.raises(ProjectError, match="invalid YAML"):
            read_project(tmp_path)
    else:
        path.write_text(f"model: {payload}" if kind == "engine" else f"seed: {payload}")
        with pytest.raises(ConfigError, match=r"invalid YAML.*python/object/apply"):
            load_yaml(EngineConfig if kind == "engine" else TrainConfig, path)
    assert not marker.exists()


class _Evil:
    """Pickles into a call of os.system: loading it with plain pickle would run a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("loader", ["checkpoint", "backbone weights", "DeepLabCut 3 model"])
def test_torch_files_cannot_run_code(tmp_path: Path, loader: str) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": _Evil(marker)}, "config": {}, "pose": {}}, path)
    if loader == "checkpoint":
        from poseloop.training.run import load_state

        with pytest.raises(ModelError, match=r"evil\.pt: cannot load model weights"):
            load_state(path)
    elif loader == "backbone weights":
        from poseloop.training.backbones import build_backbone

        with pytest.raises(WeightsError, match=r"evil\.pt: not a readable torch weights file"):
            build_backbone("mobilenet_v2_0.35", weights=str(path))
    else:
        from poseloop.export.dlc3 import load_dlc3

        with pytest.raises(ModelError, match=r"evil\.pt: cannot be read as a torch file"):
            load_dlc3(path)
    assert not marker.exists()
