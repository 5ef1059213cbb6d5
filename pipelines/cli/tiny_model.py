"""``vidcap tiny-model``: build a tiny random-weight model folder offline."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pipelines.core.usage import UsageError

# Tiny models that are not video-LM families (the registry, ``tiny_families``, lists only
# those): accepted by ``--family`` and named after the families in its help.
SPEECH_MODELS = ("whisper",)


class _Families(Sequence):
    """The families with a tiny builder, listed on first use: listing them imports every family
    (torch and transformers, seconds), which building the parser of any command must not.

    It lists the video-LM families; ``SPEECH_MODELS`` are accepted as well and named in the
    help text after them."""

    def _names(self) -> list[str]:
        from pipelines.models.tiny import tiny_families

        return tiny_families()

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        return name in SPEECH_MODELS or name in self._names()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tiny-model", help="build a tiny random-weight model folder offline")
    p.add_argument(
        "--family",
        default="qwen2_vl",
        choices=_Families(),
        metavar="MODEL_TYPE",
        help="the family's config.model_type, one of: %(choices)s (default: %(default)s); "
        f"or a speech-recognition model: {', '.join(SPEECH_MODELS)}",
    )
    p.add_argument("--out", required=True, help="folder to write the model into")
    p.add_argument("--hidden-size", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--num-layers", type=int, default=2, help="(default: %(default)s)")
    p.set_defaults(func=cmd_tiny_model)


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from pipelines.models.tiny import build_tiny_model

    sizes = {"hidden_size": args.hidden_size, "num_layers": args.num_layers}
    try:
        if args.family == "whisper":
            from pipelines.models.whisper import build_tiny_whisper

            path = build_tiny_whisper(args.out, **sizes)
        else:
            path = build_tiny_model(args.family, args.out, **sizes)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(f"tiny random-weight {args.family} model written to {path}")
    return 0
