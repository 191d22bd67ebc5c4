"""The ``poseloop`` command: train, evaluate, export, run, analyze, benchmark, listen, demo, soak,
recover.

Errors the user can fix (``PoseloopError``) print one clear message and exit with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from poseloop import __version__
from poseloop.errors import ConfigError, PoseloopError

if TYPE_CHECKING:
    from poseloop.realtime.engine import Engine


def _train_config(args: argparse.Namespace):
    from poseloop.config import TrainConfig, load_yaml, validate

    cfg = load_yaml(TrainConfig, args.config) if args.config else TrainConfig()
    overrides = {
        "backbone": args.backbone, "weights": args.weights, "iterations": args.iterations,
        "max_minutes": args.max_minutes, "batch_size": args.batch_size, "seed": args.seed,
    }
    data = cfg.model_dump()
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate(TrainConfig, data, "command line")


def cmd_train(args: argparse.Namespace) -> int:
    from poseloop.project import read_project
    from poseloop.training.run import read_run
    from poseloop.training.shuffles import is_shuffles, shuffle_folders
    from poseloop.training.train import train, train_shuffles

    shuffles = args.shuffles
    if args.resume:
        if not args.out:
            raise PoseloopError("--resume needs --out RUN_DIR of the run to continue")
        first = Path(args.out)
        if is_shuffles(first):
            shuffles = shuffles or len(shuffle_folders(first))
            first = shuffle_folders(first)[0]  # shuffle1's seed is the base seed
        info = read_run(first)
        cfg, project = info.config, read_project(info.project_root)
    else:
        cfg = _train_config(args)  # a bad option is reported before any data is read
        if not args.project:
            raise PoseloopError("train needs a PROJECT folder (or --resume --out RUN_DIR)")
        project = read_project(args.project)
    out = Path(args.out) if args.out else Path("runs") / (
        f"{project.task}-{cfg.backbone}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    print(f"training {cfg.backbone} on {project.root} ({len(project.frames)} labeled frames) "
          f"-> {out}")
    if shuffles:
        train_shuffles(project, cfg, out, shuffles, resume=args.resume, log=print)
    else:
        train(project, cfg, out, resume=args.resume, log=print)
    print(f"run saved in {out}; evaluate with: poseloop evaluate {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from poseloop.training.evaluate import evaluate, format_summary

    result = evaluate(args.run, args.project, args.out, plots=args.plots)
    print(format_summary(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def _export_options(args: argparse.Namespace):
    from poseloop.export.pipeline import ExportOptions

    return ExportOptions(
        int8=args.int8, fp16=args.fp16, opset=args.opset, exporter=args.exporter,
        parity=not args.no_parity, int8_tolerance=args.int8_tolerance, force=args.force,
    )


def _print_written(result) -> None:
    for path in (result.path, result.int8_path, result.fp16_path):
        if path is not None:
            print(f"wrote {path}")


def cmd_export(args: argparse.Namespace) -> int:
    from poseloop.export.pipeline import export_run

    _print_written(export_run(args.run, args.out, _export_options(args)))
    return 0


def cmd_import_dlc(args: argparse.Namespace) -> int:
    from poseloop.export.pipeline import import_dlc

    result = import_dlc(args.model, args.out, args.frames, args.pcutoff, _export_options(args))
    _print_written(result)
    return 0


def _add_export_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--int8", action="store_true",
                   help="also write a static-int8 model (.int8.onnx) calibrated on real frames")
    p.add_argument("--fp16", action="store_true",
                   help="also write an fp16 model (.fp16.onnx), for GPU providers")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript",
                   help="torch.onnx exporter (dynamo: torch.export based, much slower)")
    p.add_argument("--no-parity", action="store_true",
                   help="skip the ONNX-vs-PyTorch check on real frames")
    p.add_argument("--int8-tolerance", type=float, default=0.5, metavar="PX",
                   help="refuse int8 when its error grows by more than PX pixels")
    p.add_argument("--force", action="store_true", help="keep an int8 model out of tolerance")


def _stop_on_signals(engine: Engine) -> None:
    """SIGINT (Ctrl-C) and SIGTERM (a scheduler, `kill`) end the run cleanly: the loop stops
    after the frame in hand (no exception lands inside a stage), the recorder flushes and
    every device output is turned off; later signals cannot cut that short."""
    def closing(signum: int, frame: object) -> None:
        print("poseloop: still closing (flushing the recording, turning outputs off)",
              file=sys.stderr)

    def first(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, closing)
        signal.signal(signal.SIGTERM, closing)
        engine.stop()

    signal.signal(signal.SIGINT, first)
    signal.signal(signal.SIGTERM, first)


def cmd_run(args: argparse.Namespace) -> int:
    from poseloop.realtime.engine import Engine
    from poseloop.realtime.engine_config import load_engine_config, with_overrides
    from poseloop.realtime.recorder import Recorder

    cfg = load_engine_config(args.config)
    section = cfg.sinks.get("record")
    record = ({**(section.model_dump() if section else {}), "dir": args.record}
              if args.record else None)
    web = None
    if args.web:
        host, port = _host_port(args.web)
        section = cfg.sinks.get("web")
        web = {**(section.model_dump() if section is not None else {}),
               "host": host, "port": port}
    cfg = with_overrides(cfg, max_frames=args.max_frames, duration_s=args.duration,
                         record=record, display=args.display or None, web=web)
    engine = Engine.from_config(cfg)
    model = engine.model_path.name if engine.model_path else "?"
    print(f"model {model} ({len(engine.session.bodyparts)} bodyparts, "
          f"{len(engine.session.individuals)} individual(s)), camera {engine.camera!r}, "
          f"runner {engine.runner!r}")
    _stop_on_signals(engine)
    with engine:
        stats = engine.run()
    drops = ", ".join(f"{name} {n}" for name, n in stats.sink_dropped.items())
    print(f"{stats.frames} frames in {stats.seconds:.1f} s ({stats.fps:.1f} fps), stopped by "
          f"{stats.stopped_by}; dropped: camera {stats.camera_dropped}"
          f"{', ' + drops if drops else ''}, devices {stats.device_dropped}; "
          f"rule events {stats.events}")
    if stats.views_missing:
        names = [c.name for c in engine.session.cameras]
        print("camera group: views missing from a set " + ", ".join(
            f"{n} {m}" for n, m in zip(names, stats.views_missing, strict=True))
            + "; frames no set used " + ", ".join(str(u) for u in stats.views_unused))
    for error in stats.errors:
        print(f"error: {error}", file=sys.stderr)
    recorder = engine.sink("recorder")
    if isinstance(recorder, Recorder):
        video = ", video" if recorder.config.video else ""
        also = (f"each camera's DeepLabCut .csv/.h5{video}, _timing.csv, _events.csv"
                if engine.session.dims == 3 else f".h5, _timing.csv, _events.csv{video}")
        print(f"recorded {recorder.rows_written} poses to {recorder.paths['poses_csv']} "
              f"(+ {also}); write errors {recorder.errors}")
    return 1 if stats.stopped_by.endswith(" error") else 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from poseloop.analysis.batch import BarProgress, plan, run
    from poseloop.analysis.cluster import ClusterSpec, SlurmOptions, connect, inference_threads
    from poseloop.realtime.runner import RunnerConfig

    spec = ClusterSpec.parse(args.cluster) if args.cluster else None
    threads = args.threads or (inference_threads(spec) if spec else None)
    runner = RunnerConfig(providers=args.providers, allow_fallback=args.allow_fallback,
                          intra_threads=threads)
    jobs, skipped = plan(args.model, args.videos, args.out, runner, nwb=args.nwb,
                         max_frames=args.max_frames, overwrite=args.overwrite)
    for result in skipped:
        print(f"{result.video}: outputs complete, skipped (--overwrite to redo)")
    bar = BarProgress(len(jobs), enabled=None if args.progress else False)
    try:
        if spec is None or not jobs:
            results = run(jobs, progress=bar)
        else:
            slurm = SlurmOptions(queue=args.slurm_queue, account=args.slurm_account,
                                 cores=args.slurm_cores, memory=args.slurm_memory,
                                 gpus=args.slurm_gpus, processes=args.slurm_processes,
                                 jobs=args.slurm_jobs, walltime=args.slurm_walltime)
            with connect(spec, slurm) as client:
                results = run(jobs, client, bar)
    finally:
        bar.close()
    failed = [r for r in results if r.status == "failed"]
    for result in failed:
        print(f"poseloop analyze: error: {result.video}: {result.error}", file=sys.stderr)
    print(f"{len(results) - len(failed)} videos analysed, {len(skipped)} skipped (complete), "
          f"{len(failed)} failed")
    if not failed:
        return 0
    return 2 if all(r.user_error for r in failed) else 1


def _host_port(text: str) -> tuple[str, int]:
    """``--web HOST:PORT`` (HOST may be empty: loopback)."""
    host, _, port = text.rpartition(":")
    if not port.isdigit():
        raise PoseloopError(f"--web: expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def cmd_new(args: argparse.Namespace) -> int:
    from poseloop.labeling.new_project import new_project

    root = new_project(args.task, args.videos, args.bodyparts, args.individuals or (),
                       scorer=args.scorer, out=args.out, copy_videos=args.copy_videos,
                       unique_bodyparts=args.unique_bodyparts or (), identity=args.identity)
    print(f"project written: {root}\nnext: poseloop extract-frames {root}")
    return 0


def cmd_extract_frames(args: argparse.Namespace) -> int:
    from poseloop.labeling.extract_frames import extract_frames

    written = extract_frames(args.project, args.mode, args.n, args.seed)
    print(f"{len(written)} new frames to label")
    return 0


def cmd_labeled_video(args: argparse.Namespace) -> int:
    from poseloop.visualize.labeled_video import labeled_video
    from poseloop.visualize.plots import plot_poses
    from poseloop.visualize.pose_table import read_pose_table

    edges = [edge.split("-", 1) for edge in args.skeleton or []]
    if any(len(e) != 2 for e in edges):
        raise PoseloopError("--skeleton: give edges as PART-PART")
    out = labeled_video(args.poses, args.video, args.out, args.pcutoff,
                        [(a, b) for a, b in edges], args.trail)
    if args.plots:
        folder = out.with_name(f"{Path(args.video).stem}_plots")
        plots = plot_poses(read_pose_table(args.poses), folder, args.pcutoff)
        print(f"plots: {', '.join(str(p) for p in plots)}")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from poseloop.web.labeler import labeler_server

    host, port = _host_port(args.web)
    server = labeler_server(args.project, host, port, scorer=args.scorer)
    print("every change is saved at once; Ctrl-C stops the labeler")
    try:
        while True:
            time.sleep(1)
    finally:
        server.stop()


def cmd_extract_outliers(args: argparse.Namespace) -> int:
    from poseloop.labeling.outliers import extract_outliers

    written = extract_outliers(args.poses, args.video, args.project, args.criteria, args.n,
                               args.mode, args.epsilon, args.p_bound, args.seed)
    print(f"{len(written)} new frames with draft labels; correct them, then: "
          f"poseloop merge {args.project}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from poseloop.labeling.outliers import merge

    added = merge(args.project, args.scorer)
    print(f"{added} frames added to the training set; next: poseloop train {args.project}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from poseloop.config import validate
    from poseloop.realtime.benchmark import bench_size, format_table
    from poseloop.realtime.runner import RunnerConfig

    runner = validate(RunnerConfig, {
        "providers": args.providers.split(","), "intra_threads": args.threads,
        "backend": args.backend, "precision": args.precision, "cuda_graph": args.cuda_graph,
    }, "benchmark options")
    results = []
    for size in args.sizes:
        try:
            w, h = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise PoseloopError(f"--sizes: expected WIDTHxHEIGHT, got {size!r}") from None
        results.append(bench_size(args.model, (w, h), args.frames, args.video, runner))
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({r.size: r.as_json() for r in results}, indent=1))
    return 0


def cmd_listen(args: argparse.Namespace) -> int:
    from poseloop.stream.listen import listen

    listen(args.endpoint, count=args.count)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from poseloop.demo import run_demo

    run_demo(Path(args.out), seconds=args.seconds, fps=args.fps)
    return 0


def cmd_soak(args: argparse.Namespace) -> int:
    from poseloop.soak import default_out_dir, format_report, run_soak
    from poseloop.synthetic_model import synthetic_model

    w, h = (int(v) for v in args.size.split("x"))
    model = args.model or synthetic_model()
    out = Path(args.out) if args.out else default_out_dir()
    report = run_soak(model, out, args.minutes * 60, fps=args.fps, size=(w, h),
                      threads=args.threads, video=args.video)
    print(format_report(report))
    return 0 if report.ok else 1


def cmd_calibrate(args: argparse.Namespace) -> int:
    from poseloop.threed.calibrate import Board, calibrate
    from poseloop.threed.calibration import write_calibration

    try:
        cols, rows = (int(v) for v in args.squares.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--squares: expected COLUMNSxROWS, e.g. 7x5, got "
                          f"{args.squares!r}") from None
    marker = args.marker_length if args.marker_length else 0.75 * args.square_length
    board = Board(args.board, (cols, rows), args.square_length, marker, args.dictionary)
    rig, _ = calibrate(args.videos, board, args.names, args.every)
    write_calibration(rig, args.out)
    print(f"wrote {args.out} ({len(rig)} cameras: {', '.join(rig.names)})")
    return 0


def cmd_triangulate(args: argparse.Namespace) -> int:
    from poseloop.threed.calibration import read_calibration
    from poseloop.threed.points_table import triangulate_table

    rig = read_calibration(args.calibration)
    table = triangulate_table(rig, args.points, args.out, args.min_cameras, args.reject_px)
    found = table.dropna(subset=["x"])
    err = found["reprojection_error"]
    print(f"triangulated {len(found)} of {len(table)} points from {len(rig)} cameras "
          f"({', '.join(rig.names)}): reprojection error mean {err.mean():.2f} px, median "
          f"{err.median():.2f} px; cameras per point {found['n_cameras'].min()}-"
          f"{found['n_cameras'].max()} -> {args.out}")
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    from poseloop.realtime.recorder import csv_to_h5

    found = []
    for target in map(Path, args.recordings):
        if target.is_dir():  # a poses .csv is the one with a _timing.csv beside it
            found += [p for p in sorted(target.glob("*.csv"))
                      if p.with_name(f"{p.stem}_timing.csv").is_file()]
        elif target.suffix == ".csv" and target.is_file():
            found.append(target)
        else:
            raise ConfigError(f"{target}: not a recording folder or poses .csv")
    if not found:
        raise ConfigError(f"no poses .csv in {', '.join(args.recordings)}")
    failed = 0
    for csv in found:
        if csv.with_suffix(".h5").exists() and not args.force:
            print(f"{csv.with_suffix('.h5')}: exists (--force to write it again)")
            continue
        try:
            print(f"{csv} -> {csv_to_h5(csv)}")
        except OSError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(prog="poseloop", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--version", action="version", version=f"poseloop {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a pose network on a DeepLabCut project")
    t.add_argument("project", nargs="?", help="DeepLabCut project folder (with config.yaml)")
    t.add_argument("--config", help="training config YAML (see configs/train.yaml)")
    t.add_argument("--backbone", help="mobilenet_v2[_0.75|_0.5|_0.35], resnet50, efficientnet_b0")
    t.add_argument("--weights", help="imagenet (default), none, or a local weights file")
    t.add_argument("--iterations", type=int, help="optimizer steps")
    t.add_argument("--max-minutes", type=float, help="wall-clock budget in minutes")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--seed", type=int, help="split and training seed")
    t.add_argument("--out", help="run folder (default runs/<task>-<backbone>-<time>)")
    t.add_argument("--shuffles", type=int, help="train K runs on K train/test splits "
                   "(OUT/shuffle1..K, seeds seed..seed+K-1); evaluate gives mean ± sd")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="train/test pixel errors of a run, with plots")
    e.add_argument("run", help="run folder written by poseloop train")
    e.add_argument("--project", help="evaluate on another project's labeled frames")
    e.add_argument("--out", help="output folder (default RUN/evaluation)")
    e.add_argument("--json", help="also write the figures to this JSON file")
    e.add_argument("--plots", type=int, default=50, help="how many frames to plot")
    e.set_defaults(func=cmd_evaluate)

    x = sub.add_parser("export", help="export a trained run to ONNX (checked on real frames)")
    x.add_argument("run", help="run folder written by poseloop train")
    x.add_argument("--out", help="ONNX file to write (default RUN/model.onnx)")
    _add_export_options(x)
    x.set_defaults(func=cmd_export)

    m = sub.add_parser("import-dlc", help="convert a DeepLabCut 3 exported model to ONNX")
    m.add_argument("model", help="the .pt file written by deeplabcut.export_model")
    m.add_argument("--out", help="ONNX file to write (default MODEL.onnx)")
    m.add_argument("--frames", help="video or image folder for the parity check / int8 calibration")
    m.add_argument("--pcutoff", type=float, default=0.6, help="likelihood cutoff to record")
    _add_export_options(m)
    m.set_defaults(func=cmd_import_dlc)

    r = sub.add_parser("run", help="run the live loop from an experiment config")
    r.add_argument("config", nargs="?", help="experiment YAML (default: synthetic camera + "
                   "demo model)")
    r.add_argument("--max-frames", type=int, help="stop after N frames")
    r.add_argument("--duration", type=float, help="stop after S seconds")
    r.add_argument("--record", help="record poses, timings (and video if configured) here")
    r.add_argument("--display", action="store_true", help="show frames with the pose")
    r.add_argument("--web", nargs="?", const="127.0.0.1:8000", metavar="HOST:PORT",
                   help="serve the live page (default 127.0.0.1:8000; other hosts need the "
                   "printed token)")
    r.set_defaults(func=cmd_run)

    a = sub.add_parser("analyze", help="pose-track every frame of video files (offline), "
                       "here or on a Dask cluster; a rerun skips videos already done")
    a.add_argument("model", help="exported .onnx model")
    a.add_argument("videos", nargs="+", help="video files")
    a.add_argument("--out", help="output folder (default: beside each video)")
    a.add_argument("--max-frames", type=int, help="analyze only the first N frames")
    a.add_argument("--nwb", action="store_true",
                   help="also write NWB files (ndx-pose), one per individual")
    a.add_argument("--overwrite", action="store_true",
                   help="analyse videos whose outputs are already complete again")
    a.add_argument("--cluster", metavar="SPEC",
                   help="run on Dask: local[:N] (N worker processes, default one per core), "
                   "tcp://HOST:PORT (a running scheduler) or slurm (see --slurm-*); "
                   "default: one video after another in this process")
    a.add_argument("--providers", nargs="+", choices=("tensorrt", "cuda", "cpu"),
                   default=["cpu"], help="ONNX Runtime providers on every worker, in order")
    a.add_argument("--allow-fallback", action="store_true",
                   help="use the providers a worker has instead of failing")
    a.add_argument("--threads", type=int,
                   help="ONNX Runtime threads per video (default: the cores shared by the "
                   "local workers; 1 on SLURM)")
    a.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars")
    sl = a.add_argument_group("SLURM (--cluster slurm, through dask-jobqueue; partition, "
                              "account and walltime not given come from dask's "
                              "jobqueue.slurm config)")
    sl.add_argument("--slurm-queue", help="partition")
    sl.add_argument("--slurm-account", help="account to charge")
    sl.add_argument("--slurm-cores", type=int, default=4, help="cores per job (default 4)")
    sl.add_argument("--slurm-memory", default="16GB", help="memory per job (default 16GB)")
    sl.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per job (--gres=gpu:N)")
    sl.add_argument("--slurm-processes", type=int, default=1,
                    help="worker processes per job (default 1)")
    sl.add_argument("--slurm-jobs", type=int, default=1, help="jobs to start (default 1)")
    sl.add_argument("--slurm-walltime", help="time limit per job, e.g. 04:00:00")
    a.set_defaults(func=cmd_analyze)

    nw = sub.add_parser("new", help="create a DeepLabCut project (no DeepLabCut needed)")
    nw.add_argument("task", help="project name")
    nw.add_argument("--videos", nargs="+", required=True, help="videos to label frames from")
    nw.add_argument("--bodyparts", nargs="+", required=True)
    nw.add_argument("--individuals", nargs="+", help="animal names: a multi-animal project")
    nw.add_argument("--unique-bodyparts", nargs="+", help="multi-animal: points once a frame")
    nw.add_argument("--identity", action="store_true",
                    help="multi-animal: the animals can be told apart by their looks")
    nw.add_argument("--scorer", default="poseloop", help="labeler name (default poseloop)")
    nw.add_argument("--out", default=".", help="folder to create the project in")
    nw.add_argument("--copy-videos", action="store_true", help="copy instead of linking")
    nw.set_defaults(func=cmd_new)

    ef = sub.add_parser("extract-frames", help="pick frames to label from a project's videos")
    ef.add_argument("project", help="DeepLabCut project folder")
    ef.add_argument("--mode", choices=["kmeans", "uniform"], default="kmeans")
    ef.add_argument("--n", type=int, help="frames per video (default: numframes2pick)")
    ef.add_argument("--seed", type=int, default=0)
    ef.set_defaults(func=cmd_extract_frames)

    lv = sub.add_parser("labeled-video", help="draw poses on their video (+ trajectory plots)")
    lv.add_argument("poses", help="pose table .h5/.csv from analyze or a live recording")
    lv.add_argument("video", help="the video the poses are of")
    lv.add_argument("--out", help="video to write (default VIDEO_labeled.mp4)")
    lv.add_argument("--pcutoff", type=float, default=0.6, help="below it, points are hollow")
    lv.add_argument("--skeleton", nargs="+", help="edges to draw, e.g. snout-leftear")
    lv.add_argument("--trail", type=int, default=0, help="draw each part's last N positions")
    lv.add_argument("--no-plots", dest="plots", action="store_false",
                    help="skip the trajectory / likelihood PNGs")
    lv.set_defaults(func=cmd_labeled_video)

    lb = sub.add_parser("label", help="label frames in a browser (DeepLabCut's label files)")
    lb.add_argument("project", help="DeepLabCut project folder with extracted frames")
    lb.add_argument("--web", default="127.0.0.1:8000", metavar="HOST:PORT",
                    help="where to serve the labeler (other hosts need the printed token)")
    lb.add_argument("--scorer", help="CollectedData scorer (default: config.yaml scorer)")
    lb.set_defaults(func=cmd_label)

    eo = sub.add_parser("extract-outliers", help="frames where the model is likely wrong, "
                        "with its poses as draft labels")
    eo.add_argument("poses", help="pose table .h5/.csv from analyze or a live recording")
    eo.add_argument("video", help="the video the poses are of")
    eo.add_argument("--project", required=True, help="DeepLabCut project to add them to")
    eo.add_argument("--criteria", nargs="+", default=["jump", "uncertain", "fitting", "events"],
                    choices=["jump", "uncertain", "fitting", "events"])
    eo.add_argument("--n", type=int, help="frames to pick (default: numframes2pick)")
    eo.add_argument("--mode", choices=["kmeans", "uniform"], default="kmeans")
    eo.add_argument("--epsilon", type=float, default=20.0, help="px: jump / fit threshold")
    eo.add_argument("--p-bound", type=float, default=0.01, help="likelihood: uncertain below")
    eo.add_argument("--seed", type=int, default=0)
    eo.set_defaults(func=cmd_extract_outliers)

    mg = sub.add_parser("merge", help="fold drafted (corrected) frames into the training set")
    mg.add_argument("project", help="DeepLabCut project folder")
    mg.add_argument("--scorer", help="CollectedData scorer (default: config.yaml scorer)")
    mg.set_defaults(func=cmd_merge)

    b = sub.add_parser("benchmark", help="per-stage latency and throughput of the live loop")
    b.add_argument("model", help="exported .onnx model")
    src = b.add_mutually_exclusive_group()
    src.add_argument("--video", help="take frames from this video (resized to each size)")
    src.add_argument("--synthetic", action="store_true", help="synthetic frames (default)")
    b.add_argument("--sizes", nargs="+", default=["640x480", "320x240"])
    b.add_argument("--frames", type=int, default=500, help="frames per size")
    b.add_argument("--providers", default="cpu", help="e.g. cpu, cuda, tensorrt,cuda,cpu")
    b.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    b.add_argument("--backend", default="onnxruntime", help="onnxruntime or openvino")
    b.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="openvino: bf16 on CPUs with AMX / AVX512-BF16")
    b.add_argument("--cuda-graph", action="store_true",
                   help="CUDA / TensorRT: replay the network as one CUDA graph")
    b.add_argument("--json", help="write the figures to this JSON file")
    b.set_defaults(func=cmd_benchmark)

    li = sub.add_parser("listen", help="print poses from a poseloop ZeroMQ stream")
    li.add_argument("endpoint", nargs="?", default="tcp://127.0.0.1:5555")
    li.add_argument("--count", type=int, help="stop after N poses")
    li.set_defaults(func=cmd_listen)

    d = sub.add_parser("demo", help="the whole closed loop on a synthetic scene, no data needed")
    d.add_argument("--out", default="runs/demo", help="where the recording goes")
    d.add_argument("--seconds", type=float, default=10.0, help="how long the live loop runs")
    d.add_argument("--fps", type=float, default=100.0, help="synthetic camera frame rate")
    d.set_defaults(func=cmd_demo)

    so = sub.add_parser("soak", help="run the whole loop for a long time and check nothing "
                        "was lost (recording, stream, device, memory)")
    so.add_argument("--minutes", type=float, default=60.0)
    so.add_argument("--model", help="exported .onnx (default: the demo's synthetic model)")
    so.add_argument("--fps", type=float, default=200.0, help="synthetic camera frame rate")
    so.add_argument("--size", default="160x120", help="synthetic frame size WxH")
    so.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    so.add_argument("--out", help="recording folder (default: a new temporary folder)")
    so.add_argument("--video", action="store_true", help="also record the frames (.mkv)")
    so.set_defaults(func=cmd_soak)

    cb = sub.add_parser("calibrate", help="calibrate a rig from synchronised videos of a "
                        "board; writes anipose's calibration.toml")
    cb.add_argument("videos", nargs="+", help="one video (or image folder) per camera")
    cb.add_argument("--board", choices=("charuco", "checkerboard"), default="charuco")
    cb.add_argument("--squares", default="7x5", help="squares: COLUMNSxROWS")
    cb.add_argument("--square-length", type=float, default=25.0,
                    help="side of a square, in the unit of the 3D output (mm)")
    cb.add_argument("--marker-length", type=float,
                    help="ChArUco marker side (default 0.75 x the square length)")
    cb.add_argument("--dictionary", default="DICT_4X4_50", help="ChArUco ArUco dictionary")
    cb.add_argument("--names", nargs="+", help="camera names (default: the video names)")
    cb.add_argument("--every", type=int, default=1, help="use every n-th frame")
    cb.add_argument("--out", default="calibration.toml")
    cb.set_defaults(func=cmd_calibrate)
    tr = sub.add_parser("triangulate", help="3D points from a 2D table of several calibrated "
                        "views (anipose's calibration.toml)")
    tr.add_argument("calibration", help="calibration.toml (anipose / aniposelib format)")
    tr.add_argument("points", help="CSV: frame, animal, camera, bodypart, x, y[, likelihood]")
    tr.add_argument("--out", required=True, help="CSV: frame, animal, bodypart, x, y, z, "
                    "reprojection_error, n_cameras")
    tr.add_argument("--min-cameras", type=int, default=2, help="views a point needs")
    tr.add_argument("--reject-px", type=float, default=0.0,
                    help="drop the worst view while its reprojection error exceeds this (0: off)")
    tr.set_defaults(func=cmd_triangulate)
    rc = sub.add_parser("recover", help="write the DeepLabCut .h5 of recordings whose run was "
                        "killed (from their .csv, which is written as the run goes)")
    rc.add_argument("recordings", nargs="+", help="recording folders or poses .csv files")
    rc.add_argument("--force", action="store_true", help="also rewrite existing .h5 files")
    rc.set_defaults(func=cmd_recover)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``poseloop`` console command."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PoseloopError as e:
        print(f"poseloop {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"poseloop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
