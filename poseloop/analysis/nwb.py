"""NWB files of a video's poses in the ndx-pose extension, which DANDI, pynwb and movement read.

One file per individual, as DeepLabCut's dlc2nwb and movement write them (names:
:func:`poseloop.analysis.outputs.nwb_names`). Each holds, in the processing module
``behavior``, a ``Skeletons`` container with the model's skeleton over the individual's
bodyparts and a ``PoseEstimation`` named ``PoseEstimation`` (the name movement and
dlc2nwb look for) with one ``PoseEstimationSeries`` per bodypart: x, y in full-frame
pixels, the likelihood as confidence, every frame's time in the video as timestamps (the
series after the first link to its timestamps). The PoseEstimation describes the model
(file, backbone, geometry, likelihood rule, pcutoff), names the scorer and poseloop's
version, and links the camera (a Device) and the source video (an ImageSeries in
``acquisition`` pointing at the video file by its path relative to the NWB file). The
file's identifier and subject are the individual's name (what movement reads as the
individual); ``session_id`` is the video's stem and ``session_start_time`` the video
file's modification time (UTC): the recording's own time is not in the video.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from poseloop import __version__
from poseloop.modelspec import ModelSpec
from poseloop.realtime.types import UNIQUE_INDIVIDUAL
from poseloop.visualize.pose_table import PoseTable

#: Where x, y are measured from (OpenCV's image coordinates, pixel centres at integers).
REFERENCE_FRAME = ("(0, 0) is the centre of the video frame's top-left pixel; x to the "
                   "right, y down, in pixels of the full frame")


class VideoFormat(NamedTuple):
    """What the NWB file says about the source video."""

    width: int
    height: int
    fps: float
    frames: int


def model_description(spec: ModelSpec, model: Path) -> str:
    """What the PoseEstimation's description says about the model that made the poses."""
    return (f"2D keypoints estimated frame by frame by poseloop {__version__} with the "
            f"model {model.name} ({spec.backbone or 'unknown backbone'}, {spec.source}, "
            f"{spec.precision}; output stride {spec.stride:g}, offset {spec.offset:g}, "
            f"locref stdev {spec.locref_stdev:g}; likelihood: {spec.likelihood} of the "
            f"scoremap peak; pcutoff {spec.pcutoff:g}).")


def write_nwb(table: PoseTable, times_s: np.ndarray, paths: dict[str, Path], video: Path,
              video_link: str, video_format: VideoFormat, spec: ModelSpec,
              model: Path) -> None:
    """Write one NWB file per individual of ``table`` to ``paths`` (individual -> path).

    times_s: each row's time in the video (seconds); video_link: the video's path as the
    ImageSeries names it (relative to where the NWB files will be).
    """
    nwb, _ = _api()
    groups = {name: table.points[:, n] for n, name in enumerate(table.individuals)}
    if table.unique is not None:
        groups[UNIQUE_INDIVIDUAL] = table.unique
    unknown = set(paths) - set(groups)
    if unknown:
        raise ValueError(f"no poses of {sorted(unknown)} in the table (it has {list(groups)})")
    for individual, path in paths.items():
        nodes = list(table.bodyparts if individual in table.individuals
                     else table.unique_bodyparts)
        nwbfile = _nwb_file(individual, groups[individual], nodes, times_s, video_link,
                            video, video_format, spec, model, table.scorer)
        with nwb.NWBHDF5IO(str(path), mode="w") as io:
            io.write(nwbfile)


def _nwb_file(individual: str, points: np.ndarray, nodes: list[str], times_s: np.ndarray,
              link: str, video: Path, video_format: VideoFormat, spec: ModelSpec, model: Path,
              scorer: str):
    """The NWBFile of one individual's frames x K x 3 points."""
    nwb, pose = _api()
    started = datetime.datetime.fromtimestamp(video.stat().st_mtime, datetime.timezone.utc)
    nwbfile = nwb.NWBFile(
        session_description=f"poses in {video.name}, estimated by poseloop",
        identifier=individual, session_start_time=started, session_id=video.stem,
        subject=nwb.file.Subject(subject_id=individual),
    )
    camera = nwbfile.create_device(name="camera", description=f"the camera of {video.name}")
    source = nwb.image.ImageSeries(
        name="video", description=f"the video the poses are of: {video.name}",
        external_file=[link], format="external", starting_frame=[0],
        rate=video_format.fps, num_samples=video_format.frames,
        dimension=[video_format.width, video_format.height], unit="n/a")
    nwbfile.add_acquisition(source)
    index = {name: i for i, name in enumerate(nodes)}
    edges = [(index[a], index[b]) for a, b in spec.skeleton if a in index and b in index]
    skeleton = pose.Skeleton(name=f"skeleton_{individual}", nodes=nodes,
                             subject=nwbfile.subject,
                             edges=np.array(edges, np.uint8).reshape(-1, 2))
    series: list = []
    for k, bodypart in enumerate(nodes):
        series.append(pose.PoseEstimationSeries(
            name=bodypart, description=f"{bodypart} of {individual}",
            data=points[:, k, :2].astype(np.float64),
            confidence=points[:, k, 2].astype(np.float64),
            confidence_definition=f"likelihood: {spec.likelihood} of the network's scoremap "
                                  f"peak",
            unit="pixels", reference_frame=REFERENCE_FRAME,
            timestamps=series[0] if series else times_s.astype(np.float64),
        ))
    estimation = pose.PoseEstimation(
        pose_estimation_series=series, description=model_description(spec, model),
        scorer=scorer, source_software="poseloop", source_software_version=__version__,
        skeleton=skeleton, device=camera, source_video=source,
    )
    behavior = nwbfile.create_processing_module(name="behavior",
                                                description="processed behavioral data")
    behavior.add(pose.Skeletons(skeletons=[skeleton]))
    behavior.add(estimation)
    return nwbfile


def _api() -> tuple[Any, Any]:
    """pynwb and ndx_pose (the ``nwb`` extra), untyped: their classes check keyword
    arguments at run time (hdmf's docval), which type checkers cannot follow."""
    import ndx_pose
    import pynwb
    import pynwb.file
    import pynwb.image

    return pynwb, ndx_pose
