"""Typed configuration of the online endpoint; the Serve config file and CLI both build it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.core.config import (
    DEFAULT_PROMPT,
    AsrConfig,
    ContextConfig,
    DecodeConfig,
    GenerationConfig,
    ModelConfig,
)
from pipelines.core.gpu_share import GpuAsk, share_gpus


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class DeploymentConfig(_Config):
    """Replicas, autoscaling and admission control of one deployment."""

    min_replicas: int = Field(default=1, ge=0, le=1024)
    """Replicas kept alive when idle."""

    max_replicas: int = Field(default=1, ge=1, le=1024)
    """Upper bound the autoscaler may reach."""

    target_ongoing_requests: float = Field(default=2.0, gt=0, le=1024)
    """Autoscaling target: ongoing requests per replica."""

    upscale_delay_s: float = Field(default=10.0, ge=0, le=3600)
    """How long load must stay above target before adding a replica."""

    downscale_delay_s: float = Field(default=60.0, ge=0, le=3600)
    """How long load must stay below target before removing a replica."""

    max_ongoing_requests: int = Field(default=8, ge=1, le=10_000)
    """Requests one replica works on at once (batching needs more than the batch size)."""

    max_queued_requests: int = Field(default=64, ge=-1, le=1_000_000)
    """Requests waiting for a replica before callers get 503; -1 means unbounded."""

    num_cpus: float = Field(default=1.0, ge=0, le=256)
    """CPUs per replica."""

    num_gpus: float | None = Field(default=None, ge=0, le=8)
    """GPUs per replica; None (model deployments): one when the cluster's GPUs hold the
    encoder's and the LM's initial replicas, else a share of one (``ServeConfig.model_gpus``)."""

    max_batch_size: int = Field(default=4, ge=1, le=1024)
    """Largest ``@serve.batch`` batch (encoder and LM only)."""

    batch_wait_timeout_s: float = Field(default=0.01, ge=0, le=10)
    """How long a batch waits to fill before running."""

    @model_validator(mode="after")
    def _check(self) -> DeploymentConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} exceeds max_replicas")
        return self

    def serve_options(self, gpus_available: bool, num_gpus: float | None = None) -> dict:
        """Serve options; ``num_gpus`` (resolved by ``ServeConfig.model_gpus``) wins."""
        if num_gpus is None:
            num_gpus = self.num_gpus
        if num_gpus is None:
            num_gpus = 1.0 if gpus_available else 0.0
        return {
            "autoscaling_config": {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "initial_replicas": max(1, self.min_replicas),
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s,
                "downscale_delay_s": self.downscale_delay_s,
                "metrics_interval_s": min(10.0, max(0.5, self.upscale_delay_s / 2)),
                "look_back_period_s": min(30.0, max(1.0, self.upscale_delay_s)),
            },
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": num_gpus},
        }


class SecurityConfig(_Config):
    """What requests may make the server read or fetch."""

    api_key: str | None = None
    """When set, requests need ``Authorization: Bearer <api_key>``."""

    max_body_bytes: int = Field(default=64 * 1024**2, ge=1024)
    """Largest request body (JSON with a data URL, or an upload); larger gets 413."""

    max_fetch_bytes: int = Field(default=256 * 1024**2, ge=1024)
    """Largest media fetched from an http(s) URL; enforced while streaming."""

    fetch_timeout_s: float = Field(default=20.0, gt=0, le=600)
    """Total time to fetch one media URL, redirects included."""

    allowed_domains: tuple[str, ...] = ()
    """If non-empty, only these hosts (and subdomains) may be fetched."""

    allow_networks: tuple[str, ...] = ()
    """CIDRs exempt from the public-address rule; empty in production."""

    media_dir: str | None = None
    """Local paths and file:// URLs are served only from under this directory."""


IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
ONLINE_DECODE_TIMEOUT_S = 60.0


class RequestLimits(_Config):
    """What one request may cost; past a limit it gets 413 ``limit_exceeded`` naming it."""

    max_messages: int = Field(default=64, ge=1, le=1024)
    """Messages in one chat request (system and assistant turns included)."""

    max_text_chars: int = Field(default=32_000, ge=1, le=1_000_000)
    """Characters of text over all messages of a chat request (and a captions prompt)."""

    max_tokens: int = Field(default=1024, ge=1, le=8192)
    """Largest ``max_tokens`` / ``max_completion_tokens`` a request may ask for."""

    max_clips: int = Field(default=64, ge=1, le=10_000)
    """Clips one /v1/captions video may make; a longer (or sparser) video is refused."""

    max_frames: int = Field(default=2048, ge=1, le=1_000_000)
    """Frames decoded for one request, over all its clips."""

    max_decoded_bytes: int = Field(default=2 * 1024**3, ge=1024**2, le=1024**4)
    """Bytes of decoded RGB frames for one request, over all its clips."""

    max_image_pixels: int = Field(default=40_000_000, ge=1, le=1_000_000_000)
    """Width x height an ``image_url`` may declare; checked from its header, before decoding."""

    image_formats: tuple[Literal["PNG", "JPEG", "WEBP", "GIF", "BMP"], ...] = IMAGE_FORMATS
    """Image formats an ``image_url`` may be in; anything else is ``unsupported_format``."""

    clips_in_flight: int = Field(default=4, ge=1, le=256)
    """Clips of one /v1/captions request between decode and answer at once."""

    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """Time to receive a whole request body; a slower client gets 408 ``body_timeout``."""

    max_inflight_per_client: int | None = Field(default=None, ge=1, le=1_000_000)
    """Admitted requests one client (bearer token, else address) may hold at once; beyond
    it 429 ``rate_limited``, so one client cannot take every slot. None: no per-client cap."""


class ServeConfig(_Config):
    """The whole endpoint: model, stage settings, deployments, limits."""

    model: ModelConfig = ModelConfig()
    """Model run by the encoder and LM deployments."""

    served_model_name: str | None = None
    """Name reported by /v1/models and expected in requests; defaults to model.model."""

    prompt: str = Field(default=DEFAULT_PROMPT, min_length=1, max_length=8192)
    """Prompt of /v1/captions when the request gives none."""

    decode: DecodeConfig = DecodeConfig(timeout_s=ONLINE_DECODE_TIMEOUT_S)
    """Decode settings for /v1/captions (clip windows) and chat (whole video, capped). Its
    ``timeout_s`` must lie below ``request_timeout_s``: a decode the client no longer waits
    for would hold a decoder replica for nothing."""

    generation: GenerationConfig = GenerationConfig()
    """Defaults for requests that omit max_tokens, temperature, top_p or seed."""

    request_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    """Past this a request answers 504."""

    max_inflight: int | None = Field(default=None, ge=1, le=1_000_000)
    """Requests one ingress replica lets into the model pipeline at once; beyond it a
    request gets 503 before its body is read. None: what the LM deployment works on at
    full scale (max_replicas x max_ongoing_requests), split over the ingress replicas, so
    an admitted chat request never waits in the LM's queue (captions requests, which fan
    out one LM call per clip, still use it)."""

    security: SecurityConfig = SecurityConfig()
    """Authentication, body and fetch limits."""

    limits: RequestLimits = RequestLimits()
    """What one request may cost (messages, text, tokens, clips, frames, pixels)."""

    encoding_cache_mb: float = Field(default=256.0, ge=0, le=1_000_000)
    """Encoder output kept per ingress replica for chat follow-ups in the same session
    (``X-Session-Id`` or ``user``); 0 turns the cache off."""

    ingress: DeploymentConfig = DeploymentConfig(num_cpus=0.1, max_ongoing_requests=64)
    """The FastAPI ingress (no model)."""

    decoder: DeploymentConfig = DeploymentConfig(max_ongoing_requests=4)
    """The PyAV decode deployment (CPU)."""

    encoder: DeploymentConfig = DeploymentConfig()
    """The vision-encoder deployment."""

    lm: DeploymentConfig = DeploymentConfig()
    """The language-model deployment."""

    context: ContextConfig = ContextConfig()
    """How a /v1/captions clip's speech (the request's subtitles, the video's own, or its
    transcript) and the request's ``context`` text enter its prompt; a request's
    ``context_source`` overrides ``source`` (see ``serve.context``)."""

    asr: AsrConfig | None = None
    """Speech recognition for /v1/captions: with it, a video without subtitles (``auto``)
    or a request asking ``context_source=transcript`` is transcribed first and each clip
    gets the segments it overlaps. None: no transcriber is deployed."""

    transcriber: DeploymentConfig = DeploymentConfig()
    """The speech-recognition deployment (only deployed when ``asr`` is set)."""

    @field_validator("decode", mode="before")
    @classmethod
    def _online_decode_budget(cls, value):
        # Offline, a video may take 600 s to decode; online the request would be gone long
        # before. A decode section that leaves timeout_s out gets the online default.
        if isinstance(value, dict) and "timeout_s" not in value:
            return {**value, "timeout_s": ONLINE_DECODE_TIMEOUT_S}
        return value

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if self.context.source == "transcript" and self.asr is None:
            raise ValueError("context.source='transcript' needs asr (a Whisper checkpoint)")
        if self.decode.timeout_s >= self.request_timeout_s:
            raise ValueError(
                f"decode.timeout_s={self.decode.timeout_s} must be below "
                f"request_timeout_s={self.request_timeout_s}"
            )
        if self.generation.max_new_tokens > self.limits.max_tokens:
            raise ValueError(
                f"generation.max_new_tokens={self.generation.max_new_tokens} exceeds "
                f"limits.max_tokens={self.limits.max_tokens}"
            )
        if self.security.fetch_timeout_s >= self.request_timeout_s:
            raise ValueError(
                f"security.fetch_timeout_s={self.security.fetch_timeout_s} must be below "
                f"request_timeout_s={self.request_timeout_s}"
            )
        return self

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model.model

    def model_gpus(self, cluster_gpus: float) -> dict[str, float]:
        """``num_gpus`` per replica of the ``encoder`` and ``lm`` deployments (and of the
        transcriber, ``asr``, when speech recognition is on).

        Whole GPUs when the cluster's hold both deployments' initial replicas; else they
        share, the LM with the larger part (``pipelines.core.gpu_share``): on a one-GPU
        machine a whole GPU each would leave the second deployment pending forever.
        """
        asks = {
            name: GpuAsk(max(1, d.min_replicas), d.num_gpus)
            for name, d in (("encoder", self.encoder), ("lm", self.lm))
        }
        if self.asr is not None:  # the transcriber shares too (gpu_share weighs it as "asr")
            asks["asr"] = GpuAsk(max(1, self.transcriber.min_replicas), self.transcriber.num_gpus)
        return share_gpus(asks, cluster_gpus)

    @property
    def inflight_limit(self) -> int:
        if self.max_inflight is not None:
            return self.max_inflight
        total = self.lm.max_replicas * self.lm.max_ongoing_requests
        return max(1, total // max(1, self.ingress.max_replicas))
