"""Decode + chunk + sample: one video in, a stream of clips out (the only fan-out stage)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

import av

from pipelines.core.config import ContextConfig, DecodeConfig
from pipelines.core.errors import ErrorCode, MediaError, StageError
from pipelines.core.faults import UnitAttempt, UnitLedger, maybe_crash, quarantine_code
from pipelines.core.records import Clip, ClipRef, FailedClip, VideoTask, decoded_row
from pipelines.core.stage import FanOutStage, Resources, RowCodec
from pipelines.media.decode import iter_clips
from pipelines.stages.speech import VideoSpeech


class DecodeStage(FanOutStage[VideoTask, Clip | FailedClip]):
    name = "decode"
    codec = RowCodec(VideoTask.from_row, decoded_row)

    def __init__(
        self,
        config: DecodeConfig,
        num_cpus: float = 1.0,
        attempts: UnitLedger | None = None,
        max_attempts: int = 3,
        exit_on_hang: bool = True,
        context: ContextConfig | None = None,
    ) -> None:
        self.config = config
        self.context = context or ContextConfig(source="none")
        """Which text of the video each clip carries to the LM (see ``stages.context``)."""
        self._resources = Resources(num_cpus=num_cpus)
        self.attempts = attempts
        self.max_attempts = max_attempts
        self.exit_on_hang = exit_on_hang
        """End the worker process when a decoder call hangs past twice the budget (offline,
        where Ray retries the unit); a Serve replica must not end itself for one request."""
        self._unit: UnitAttempt | None = None
        self._unit_index: dict[str, int] = {}

    @property
    def resources(self) -> Resources:
        return self._resources

    def begin_unit(self, items: Sequence[VideoTask]) -> None:
        """Start a work unit (offline): its attempt number and what earlier attempts of it
        left against its videos."""
        if self.attempts is None:
            return
        self._unit = self.attempts.start_unit([t.video_key for t in items])
        self._unit_index = {t.video_key: i for i, t in enumerate(items)}

    def end_unit(self) -> None:
        if self.attempts is not None and self._unit is not None:
            self.attempts.finish_unit()
        self._unit = None

    def iter_outputs(self, item: VideoTask) -> Iterator[Clip | FailedClip]:
        attempt = 0
        if self.attempts is not None and self._unit is not None:
            attempt = self._unit.attempt
            deaths = self._unit.deaths.get(item.video_key)
            if deaths is not None and deaths.count >= self.max_attempts:
                code = quarantine_code(deaths.reasons)
                message = f"quarantined after {deaths.count} attempts that each killed the worker"
                error = StageError(code, message, self.name)
                ref = ClipRef.for_video_error(item, attempt)
                yield FailedClip(_final(ref, len(item.asks)), error)
                return
            self.attempts.working_on(self._unit_index[item.video_key])
        outputs = self._outputs(item, attempt)
        previous: Clip | FailedClip | None = None
        rows = 0
        # The media layer checks its budget between packets; a decoder stuck inside one
        # call never returns to check. Past twice the budget the worker is ended, so Ray
        # retries and the attempt log turns a repeat offender into a decode_timeout row.
        limit_s = self.config.timeout_s * 2 + 30 if self.exit_on_hang else None
        attempts = self.attempts if self._unit is not None else None
        while True:
            # Only time spent decoding counts, not time the consumer holds a clip.
            with _HANG_WATCH.busy(limit_s, attempts):
                current = next(outputs, None)
            if current is None:
                break
            if previous is not None:
                yield previous
            rows += len(current.ref.asks)
            previous = current
        if previous is None:
            previous = self._failure(
                item, attempt, 0, ErrorCode.EMPTY, "no clip could be cut", time.perf_counter()
            )
            rows = len(previous.ref.asks)
        # The final item tells the writer how many rows the video makes in all.
        yield _with_ref(previous, _final(previous.ref, rows))

    def _outputs(self, item: VideoTask, attempt: int) -> Iterator[Clip | FailedClip]:
        """Every clip that some ask applies to, then a row for each ask no clip covered."""
        covered: set[int] = set()
        failed = False
        for out in self._clips(item, attempt):
            failed = failed or isinstance(out, FailedClip)
            covered.update(a.index for a in out.ref.asks)
            yield out
        if failed:
            return  # the failure row already stands for every ask of the rest
        for ask in item.asks:
            if ask.index not in covered:
                ref = ClipRef.for_video_error(item, attempt)
                span = f"{ask.start_s:g}-{ask.end_s:g} s" if ask.start_s is not None else "?"
                error = StageError(
                    ErrorCode.OUT_OF_RANGE,
                    f"the question's range {span} overlaps no clip of the video",
                    self.name,
                )
                yield FailedClip(replace(ref, asks=(ask,), last=False), error)

    def _clips(self, item: VideoTask, attempt: int) -> Iterator[Clip | FailedClip]:
        maybe_crash(item.source)
        produced = 0
        started = time.perf_counter()
        speech = VideoSpeech.of(item, self.context, self.config)
        try:
            for decoded in iter_clips(item.source, self.config):
                asks = tuple(a for a in item.asks if a.covers(decoded.start_s, decoded.end_s))
                produced = decoded.clip_index + 1
                if not asks:
                    started = time.perf_counter()
                    continue
                clip_speech, context_source = speech.for_clip(decoded.start_s, decoded.end_s)
                ref = ClipRef(
                    video_id=item.video_id,
                    source=item.source,
                    asks=asks,
                    clip_index=decoded.clip_index,
                    start_s=decoded.start_s,
                    end_s=decoded.end_s,
                    frame_ts_s=tuple(decoded.frame_ts_s),
                    partial=decoded.partial,
                    video_key=item.video_key,
                    attempt=attempt,
                    speech=clip_speech,
                    video_context=speech.context,
                    context_source=context_source,
                )
                now = time.perf_counter()
                yield Clip(ref, decoded.frames, decode_s=now - started)
                started = time.perf_counter()
        except MediaError as exc:
            yield self._failure(item, attempt, produced, exc.code, exc.message, started)
        except av.error.FFmpegError as exc:
            # An FFmpeg error the media layer did not classify is still a property of this
            # file, not of the worker: record it rather than failing the job.
            message = f"FFmpeg: {exc}"
            yield self._failure(item, attempt, produced, ErrorCode.CORRUPT, message, started)
        except MemoryError:
            if self.attempts is not None and self._unit is not None:
                self.attempts.reason("oom")
            raise

    def _failure(
        self,
        item: VideoTask,
        attempt: int,
        produced: int,
        code: ErrorCode,
        message: str,
        started: float,
    ) -> FailedClip:
        ref = replace(ClipRef.for_video_error(item, attempt), last=False)
        if produced:
            # Clips before the failure were emitted; this row stands for the rest, once
            # for every ask (each ask gets an answer or the reason it has none).
            ref = replace(ref, clip_index=produced)
        error = StageError(code, message, self.name)
        return FailedClip(ref, error, decode_s=time.perf_counter() - started)


class _HangWatch:
    """Ends this worker process when a decoder call, in any thread, runs past its limit.

    One daemon thread per process, started on first use and shared by every copy of the
    stage (Ray unpickles a copy per task): a thread per video cost ~0.5 ms of the ~8 ms a
    one-second video takes to decode (cProfile).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[int, tuple[float, UnitLedger | None]] = {}
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def busy(self, limit_s: float | None, attempts: UnitLedger | None) -> Iterator[None]:
        if limit_s is None:
            yield
            return
        me = threading.get_ident()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name="decode-hang", daemon=True)
                self._thread.start()
            self._calls[me] = (time.monotonic() + limit_s, attempts)
        try:
            yield
        finally:
            with self._lock:
                del self._calls[me]

    def _watch(self) -> None:
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            with self._lock:
                calls = list(self._calls.values())
            for deadline, attempts in calls:
                if now > deadline:
                    if attempts is not None:
                        attempts.reason("timeout")
                    os._exit(1)


_HANG_WATCH = _HangWatch()


def _final(ref: ClipRef, video_rows: int) -> ClipRef:
    return replace(ref, last=True, video_rows=video_rows)


def _with_ref(item: Clip | FailedClip, ref: ClipRef) -> Clip | FailedClip:
    if isinstance(item, Clip):
        return Clip(ref, item.frames, item.decode_s)
    return FailedClip(ref, item.error, item.decode_s)
