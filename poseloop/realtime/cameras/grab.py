"""The thread that reads an opened camera continuously and keeps only the newest frame."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from poseloop.errors import CameraError
from poseloop.realtime.types import Camera, Frame

log = logging.getLogger(__name__)


class GrabThread:
    """Reads an opened camera in a thread and hands the newest frame to one consumer.

    Reading continuously keeps the driver's buffer from filling. A single slot holds the
    newest unconsumed frame; a new frame replaces it and the old one counts in ``dropped``
    (it was never processed). :meth:`get` waits for a frame newer than the last one
    returned, returns None once the camera has ended, and raises CameraError when the
    camera failed or delivered nothing for the timeout. Images cycle through three buffers:
    a frame returned by :meth:`get` is valid until the next :meth:`get` (copy what must
    live longer).

    The camera's owner opens it before :meth:`start` and closes it after :meth:`stop`
    returned True; this thread only reads.
    """

    def __init__(self, camera: Camera, timeout_s: float = 2.0) -> None:
        if not isinstance(camera, Camera):
            raise TypeError(f"{camera!r} is not a Camera (needs open, read, close)")
        self.camera = camera
        self.timeout_s = timeout_s
        self.grabbed = 0
        self.dropped = 0
        self.delivered = 0
        self._cond = threading.Lock()  # guards the state below; held only briefly
        # A lock used as a one-shot signal: released when there is news for get() (a frame,
        # the end, an error, an interrupt). One futex wait and wake per frame, where a
        # Condition allocates a waiter lock and takes its own lock twice more.
        self._signal = threading.Lock()
        self._signal.acquire()
        self._signaled = False
        self._slot: Frame | None = None
        self._held: Frame | None = None
        self._free: list[np.ndarray] = []
        self._last_index: int | None = None
        self._ended = False
        self._error: CameraError | None = None
        self._stopping = False
        self._interrupted = False
        self._thread = threading.Thread(target=self._run, name=f"grab {camera!r}", daemon=True)

    def start(self) -> GrabThread:
        """Start reading the (already opened) camera."""
        self._thread.start()
        return self

    def __enter__(self) -> GrabThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._stopping:
                        return
                    buffer = self._free.pop() if self._free else None
                frame = self.camera.read(buffer)
                with self._cond:
                    if frame is None:
                        self._ended = True
                    else:
                        if self._slot is not None:
                            self.dropped += 1
                            self._free.append(self._slot.image)
                        self._slot = frame
                        self.grabbed += 1
                    self._notify()
                if frame is None:
                    return
        except Exception as e:  # the thread must hand every failure to the consumer
            error = e if isinstance(e, CameraError) else CameraError(
                f"{self.camera!r}: {type(e).__name__}: {e}"
            )
            with self._cond:
                self._error = error
                self._notify()

    def _notify(self) -> None:
        """Wake get() (call with ``_cond`` held)."""
        if not self._signaled:
            self._signaled = True
            self._signal.release()

    def _reset_signal(self) -> None:
        """Consume a pending signal (call with ``_cond`` held)."""
        if self._signaled:
            self._signal.acquire(blocking=False)
            self._signaled = False

    def interrupt(self) -> None:
        """Make :meth:`get` return None from now on, at once (safe from a signal handler)."""
        with self._cond:
            self._interrupted = True
            self._notify()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet returned; None at the end of the stream or once
        :meth:`interrupt` was called.

        Raises CameraError if the camera failed, or if no new frame came for ``timeout``
        seconds (default: the thread's ``timeout_s``).
        """
        timeout = self.timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._held is not None:
                self._free.append(self._held.image)
                self._held = None
        while True:
            with self._cond:
                self._reset_signal()
                if self._interrupted:
                    return None
                frame = self._slot
                if frame is not None:
                    self._slot = None
                    self._held = frame
                    self._last_index = frame.index
                    self.delivered += 1
                    return frame
                if self._error is not None:
                    raise self._error
                if self._ended:
                    return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CameraError(
                    f"{self.camera!r}: no frame for {timeout:g} s after frame "
                    f"{self._last_index} (camera stalled or disconnected?)"
                )
            if self._signal.acquire(timeout=remaining):
                with self._cond:
                    self._signaled = False

    def stop(self, timeout: float | None = None) -> bool:
        """Stop reading; True once the thread has ended, so the camera may be closed.

        False if it is still inside the camera's ``read`` after ``timeout`` seconds
        (default ``timeout_s``): closing a camera under a running read is unsafe, so the
        owner should leave it open (logged); the daemon thread ends with the process.
        """
        with self._cond:
            self._stopping = True
            self._notify()
        timeout = self.timeout_s if timeout is None else timeout
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%r did not return from read() within %g s: it is left open",
                        self.camera, timeout)
            return False
        return True
