"""The Dask client that ``poseloop analyze --cluster`` hands its videos to.

``--cluster`` names where the workers are:

* ``local`` or ``local:N``: a ``LocalCluster`` on this machine, N worker processes (default:
  one per core) of one thread each, on the loopback interface; each worker's ONNX Runtime
  session gets ``cores // N`` threads.
* ``tcp://HOST:PORT`` (any ``scheme://address``): a running Dask scheduler and its workers
  (started with ``dask scheduler`` / ``dask worker``, on any machines that see the videos
  and the output folder at the same paths).
* ``slurm``: workers in SLURM jobs through dask-jobqueue's ``SLURMCluster``
  (:class:`SlurmOptions`: partition, account, cores, memory, GPUs, worker processes per
  job, jobs, walltime; partition, account and walltime not given come from dask's
  ``jobqueue.slurm`` config, as does everything else, e.g. the network interface).
  Each worker runs ``cores // processes`` videos at once, one inference thread each.

Needs the ``cluster`` extra: ``pip install 'poseloop[cluster]'``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from poseloop.errors import ConfigError

#: The forms ``--cluster`` takes, for messages.
FORMS = "local, local:N, tcp://HOST:PORT (a running scheduler) or slurm"


@dataclass(frozen=True)
class SlurmOptions:
    """The SLURM jobs that hold the workers (None: from dask's ``jobqueue.slurm`` config)."""

    queue: str | None = None
    account: str | None = None
    cores: int = 4
    memory: str = "16GB"
    gpus: int = 0
    processes: int = 1
    jobs: int = 1
    walltime: str | None = None

    def cluster_kwargs(self) -> dict[str, Any]:
        """SLURMCluster's keyword arguments for these options."""
        if self.cores < 1 or self.processes < 1 or self.jobs < 1 or self.gpus < 0:
            raise ConfigError(f"slurm: cores, processes and jobs must be >= 1 and gpus >= 0, "
                              f"got {self}")
        if self.processes > self.cores:
            raise ConfigError(f"slurm: {self.processes} worker processes need at least as many "
                              f"cores (got {self.cores})")
        kwargs: dict[str, Any] = {"cores": self.cores, "memory": self.memory,
                                  "processes": self.processes}
        for key in ("queue", "account", "walltime"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        if self.gpus:
            kwargs["job_extra_directives"] = [f"--gres=gpu:{self.gpus}"]
        return kwargs


@dataclass(frozen=True)
class ClusterSpec:
    """A parsed ``--cluster``: ``kind`` local (``workers``), address, or slurm."""

    kind: str
    workers: int | None = None
    address: str | None = None

    @classmethod
    def parse(cls, text: str) -> ClusterSpec:
        """ConfigError naming the accepted forms for anything else."""
        if text == "slurm":
            return cls("slurm")
        if "://" in text:
            return cls("address", address=text)
        name, _, count = text.partition(":")
        if name == "local":
            if not count:
                return cls("local", os.cpu_count() or 1)
            if count.isdigit() and int(count) >= 1:
                return cls("local", int(count))
        raise ConfigError(f"--cluster {text!r}: expected {FORMS}")


def inference_threads(spec: ClusterSpec) -> int | None:
    """The ONNX Runtime threads each video's session gets on ``spec``'s workers: the cores
    shared among the local workers, one for SLURM workers (one per video they run at
    once); None (ONNX Runtime's default) on another scheduler's workers."""
    if spec.kind == "local":
        return max(1, (os.cpu_count() or 1) // (spec.workers or 1))
    return 1 if spec.kind == "slurm" else None


@contextlib.contextmanager
def connect(spec: ClusterSpec, slurm: SlurmOptions | None = None) -> Iterator[Any]:
    """A Dask client of ``spec``; the cluster it started is closed on exit."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:
        raise ConfigError("--cluster needs Dask distributed: pip install 'poseloop[cluster]'"
                          ) from e
    if spec.kind == "address":
        with Client(spec.address) as client:
            yield client
        return
    with _environ_kept():
        if spec.kind == "local":
            cluster: Any = LocalCluster(n_workers=spec.workers or 1, threads_per_worker=1,
                                        processes=True, host="127.0.0.1",
                                        dashboard_address=":0")
        else:
            try:
                from dask_jobqueue.slurm import SLURMCluster
            except ImportError as e:
                raise ConfigError("--cluster slurm needs dask-jobqueue: pip install "
                                  "'poseloop[cluster]'") from e
            slurm = slurm or SlurmOptions()
            cluster = SLURMCluster(**slurm.cluster_kwargs())
            cluster.scale(jobs=slurm.jobs)
        with cluster, Client(cluster) as client:
            yield client


@contextlib.contextmanager
def _environ_kept() -> Iterator[None]:
    """Put this process's environment back as it was: Dask's nannies set theirs
    (``OMP_NUM_THREADS=1``, ``MALLOC_TRIM_THRESHOLD_``, ``PYTHONHASHSEED``, ...) in the
    process that starts the workers and leave it there, where it would throttle every later
    child process (a live run started after an analysis)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
