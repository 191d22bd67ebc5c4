"""One-way ZeroMQ pose latency: publisher here, PoseSubscriber in another process.

Latency is t_receive - t_publish on the shared CLOCK_MONOTONIC (transport + decode), per
pose, at a fixed rate and as fast as the publisher can send. Also reports the publisher's
own cost per pose (``PosePublisher.pose``: encode + non-blocking send), the time the loop
pays.

    python benchmarks/stream_latency.py [--count 5000] [--rates 200 0] [--bodyparts 8]
                                        [--individuals 1]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

import numpy as np
import zmq

from poseloop.realtime.types import STAGES, ActionRecord, Pose, Session
from poseloop.stream import EventMessage, PoseMessage, PosePublisher, PoseSubscriber, StreamConfig
from poseloop.stream.clock import now_ns


def subscribe(endpoint: str, ready: Event, results: Connection) -> None:
    """Child process: record t_receive - t_publish of every pose until the 'end' event."""
    latencies, frames = [], []
    with PoseSubscriber(endpoint, topics=("pose", "event")) as sub:
        for message in sub:
            t_receive = now_ns()
            if isinstance(message, PoseMessage):
                if message.frame < 0:  # warm-up
                    ready.set()
                    continue
                latencies.append(t_receive - message.t_publish_ns)
                frames.append(message.frame)
            elif isinstance(message, EventMessage) and message.rule == "end":
                break
    results.send((np.array(latencies, np.int64), np.array(frames, np.int64)))


def run(count: int, rate: float, k: int, n: int = 1) -> dict[str, float]:
    """Publish ``count`` N x K poses at ``rate`` Hz (0: as fast as possible) to a child
    process."""
    individuals = ("animal",) if n == 1 else tuple(f"mouse{i}" for i in range(n))
    session = Session(bodyparts=tuple(f"bp{i}" for i in range(k)), individuals=individuals,
                      multi_animal=n > 1, model="benchmark")
    points = np.random.default_rng(0).random((n, k, 3)).astype(np.float32)
    ids = np.arange(n, dtype=np.int64)
    ctx = mp.get_context("spawn")
    ready, (results, child_end) = ctx.Event(), ctx.Pipe(duplex=False)
    with PosePublisher(StreamConfig(endpoint="tcp://127.0.0.1:*")) as pub:
        pub.open(session)
        child = ctx.Process(target=subscribe, args=(pub.endpoint, ready, child_end))
        child.start()
        while not ready.is_set():
            t = time.perf_counter_ns()
            pub.pose(Pose(points, -1, t, {}, ids))
            time.sleep(0.01)
        send_ns = np.empty(count, np.int64)
        period, start = 1.0 / rate if rate else 0.0, time.perf_counter()
        for i in range(count):
            if period:
                time.sleep(max(0.0, start + i * period - time.perf_counter()))
            t = time.perf_counter_ns()
            pose = Pose(points, i, t, {stage: t for stage in STAGES[:-1]}, ids)
            pub.pose(pose)
            send_ns[i] = time.perf_counter_ns() - t
        while not results.poll(0.05):
            pub.event(ActionRecord(count, "end", "stop", time.perf_counter_ns()))
        latencies, frames = results.recv()
        dropped = pub.dropped_by_topic["pose"]
    child.join()
    us = latencies / 1e3
    return {
        "rate": rate,
        "sent": count,
        "received": len(frames),
        "dropped": dropped,
        "p50": np.percentile(us, 50),
        "p95": np.percentile(us, 95),
        "p99": np.percentile(us, 99),
        "max": us.max(),
        "send_mean": send_ns.mean() / 1e3,
        "send_p99": np.percentile(send_ns, 99) / 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="poses per run")
    parser.add_argument("--rates", type=float, nargs="+", default=[200, 0],
                        help="publish rates in Hz; 0 = as fast as possible")
    parser.add_argument("--bodyparts", type=int, default=8)
    parser.add_argument("--individuals", type=int, default=1, help="N animals per pose")
    args = parser.parse_args()
    print(f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}, {mp.cpu_count()} cores, "
          f"N={args.individuals}, K={args.bodyparts}, one-way t_receive - t_publish in µs\n")
    print("| rate | sent | received | dropped | p50 | p95 | p99 | max | pose() mean | pose() p99 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rate in args.rates:
        r = run(args.count, rate, args.bodyparts, args.individuals)
        label = f"{rate:g} Hz" if rate else "max"
        print(f"| {label} | {r['sent']} | {r['received']} | {r['dropped']} | {r['p50']:.0f} | "
              f"{r['p95']:.0f} | {r['p99']:.0f} | {r['max']:.0f} | {r['send_mean']:.1f} | "
              f"{r['send_p99']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
