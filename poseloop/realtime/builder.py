"""Makes the engine's parts from an ``EngineConfig`` and hands them to :class:`Engine`.

Every part comes from its own factory and its own config section: the camera and sinks
from their registries, the runner, preprocess and decoder from the model, processors,
rules and actuators from their lists. Nothing here opens a device, a socket or a file: that
is the engine's :meth:`~poseloop.realtime.engine.Engine.open`, so a config that fails to
build leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path

from poseloop.errors import ConfigError
from poseloop.hardware.actuators import make_actuators
from poseloop.modelspec import ModelSpec
from poseloop.realtime.cameras import make_camera
from poseloop.realtime.cameras.group import CameraGroup, GroupConfig
from poseloop.realtime.decoder import make_decoder
from poseloop.realtime.engine import Engine
from poseloop.realtime.engine_config import EngineConfig
from poseloop.realtime.preprocess import Preprocessor
from poseloop.realtime.processors import make_processors
from poseloop.realtime.runner import ModelRunner, make_runner
from poseloop.realtime.sinks import SINKS
from poseloop.realtime.tracker import AnimalTracker
from poseloop.realtime.types import Camera, Decoder, Session, Sink
from poseloop.rules import RuleSet
from poseloop.threed.live import LiveTriangulation


def model_file(config: EngineConfig) -> Path:
    """The config's model, or the demo's synthetic model when it names none (built once)."""
    if config.model is not None:
        return Path(config.model)
    from poseloop.synthetic_model import synthetic_model

    return synthetic_model()


def scorer_of(spec: ModelSpec) -> str:
    """The scorer a model's pose tables are named with (DeepLabCut's ``DLC_...`` form)."""
    return f"DLC_poseloop_{spec.backbone or 'model'}"


def session_of(spec: ModelSpec, model: Path) -> Session:
    """The names a run's sinks need, from the model (cameras are filled in at open)."""
    return Session(
        bodyparts=tuple(spec.bodyparts), individuals=spec.individual_names,
        unique_bodyparts=tuple(spec.unique_bodyparts),
        skeleton=tuple((a, b) for a, b in spec.skeleton), multi_animal=spec.multi_animal,
        model=model.name, scorer=scorer_of(spec),
        pcutoff=spec.pcutoff, cameras=(),
    )


def make_tracker(spec: ModelSpec, decoder: Decoder) -> AnimalTracker | None:
    """Identities across frames for a multi-animal model (None for a single animal)."""
    if not spec.multi_animal:
        return None
    return AnimalTracker(len(spec.individuals), len(spec.bodyparts),
                         identity_source=decoder if spec.identity else None)


def make_sinks(config: EngineConfig) -> list[Sink]:
    """The sinks whose sections are on, in registration order; a sink that draws the rules'
    zones (``set_zones``) is given them."""
    sinks = []
    zones = rule_zones([r.model_dump(by_alias=True) for r in config.rules])
    for name, section in config.sinks.items():
        if section is not None:
            sink = SINKS[name].factory(section)
            if sink is not None:
                if hasattr(sink, "set_zones"):
                    sink.set_zones(zones)
                sinks.append(sink)
    return sinks


def rule_zones(rules: list[dict]) -> list[tuple[str, dict]]:
    """(rule name, shape) of every 2D ``zone`` predicate in the rules, however deeply nested.

    3D zones (``box``, ``sphere``) are left out: they have no outline to draw on an image."""
    found: list[tuple[str, dict]] = []

    def walk(name: str, node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "zone":
                shape = {k: node[k] for k in ("rect", "circle", "polygon")
                         if node.get(k) is not None}
                if shape:
                    found.append((name, shape))
            for value in node.values():
                walk(name, value)
        elif isinstance(node, list):
            for value in node:
                walk(name, value)

    for rule in rules:
        walk(str(rule.get("name", "")), rule.get("when"))
    return found


def make_group(config: GroupConfig, timeout_s: float) -> CameraGroup:
    """The camera group of a ``group`` section (errors name ``group.cameras[i]``)."""
    cameras = [make_camera(c, f"group.cameras[{i}]") for i, c in enumerate(config.cameras)]
    return CameraGroup(cameras, config.sync, config.tolerance_ms, timeout_s)


def build_engine(config: EngineConfig, camera: Camera | CameraGroup | None = None,
                 runner: ModelRunner | None = None) -> Engine:
    """An Engine with every part of ``config`` (``camera`` replaces the configured camera
    or group; ``runner``, one already made for the config's model and runner section,
    replaces making one: offline analysis opens one inference session per worker, not one
    per video)."""
    model = model_file(config)
    runner = runner if runner is not None else make_runner(model, config.runner)
    spec = runner.spec
    actuators = make_actuators(config.devices)
    group = config.group
    rules = RuleSet.compile(
        [r.model_dump(by_alias=True) for r in config.rules], spec.bodyparts, spec.pcutoff,
        devices={a.name for a in actuators}, individuals=spec.individual_names,
        dims=2 if group is None else 3,
    ) if config.rules else None
    decoder = make_decoder(spec)
    if group is None:
        source: Camera | CameraGroup = camera if camera is not None \
            else make_camera(config.camera)
        preprocess: Preprocessor | list[Preprocessor] = Preprocessor.from_spec(
            spec, config.preprocess)
        tracker = make_tracker(spec, decoder)
        triangulation = None
    else:
        source = camera if camera is not None else make_group(group, config.camera_timeout_s)
        views = len(group.cameras)
        preprocess = [Preprocessor.from_spec(spec, config.preprocess) for _ in range(views)]
        tracker = [make_tracker(spec, decoder) for _ in range(views)]
        triangulation = LiveTriangulation.from_config(
            group.triangulation, (len(spec.individual_names), len(spec.bodyparts)),
            spec.pcutoff)
        if triangulation.cameras != views:
            raise ConfigError(f"group: {views} cameras but group.triangulation names "
                              f"{triangulation.cameras} ({', '.join(triangulation.names)}): "
                              f"give triangulation.cameras, one per camera")
    return Engine(
        camera=source,
        preprocess=preprocess,
        runner=runner,
        decoder=decoder,
        tracker=tracker,
        triangulation=triangulation,
        session=session_of(spec, model),
        processors=make_processors(config.processors, spec.pcutoff),
        rules=rules,
        actuators=actuators,
        sinks=make_sinks(config),
        limits=config,
        model_path=model,
    )
