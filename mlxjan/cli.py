"""`mlxjan serve | pull | create | list | rm | ps | load | unload | convert | service |
doctor`: a thin CLI."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mlxjan.errors import MlxjanError
from mlxjan.models.store import ModelStore
from mlxjan.runner import EXIT_PORT_IN_USE, PortInUseError, configure_logging
from mlxjan.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    flags: dict[str, Any] = {
        key: value for key in ("host", "port", "api_key", "api_key_file", "engine", "data_dir",
                               "context_length", "threads", "log_level", "log_file",
                               "request_timeout", "wait_for_port")
        if (value := getattr(args, key, None)) is not None
    }
    if getattr(args, "model", None):
        flags["default_model"] = args.model
    if getattr(args, "flash_attention", None):
        flags["flash_attention"] = {"on": True, "off": False, "auto": None}[args.flash_attention]
    return Settings(**flags)


def _add_store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="model store and state (env MLXJAN_HOME)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlxjan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the OpenAI-compatible server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--model", help="default model id (fetched first if in the catalog)")
    serve.add_argument("--engine", choices=["auto", "mlx", "llamacpp"])
    serve.add_argument("--context-length", type=int)
    serve.add_argument("--threads", type=int)
    serve.add_argument("--flash-attention", choices=["on", "off", "auto"],
                       help="llama.cpp's flash attention (auto: where it pays on this CPU)")
    serve.add_argument("--api-key")
    serve.add_argument("--api-key-file", help="file holding the API key (mode 0600)")
    serve.add_argument("--log-file", help="also log to this file, rotated at 10 MB")
    serve.add_argument("--request-timeout", type=float)
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--wait-for-port", action="store_true", default=None,
                       help="if another program holds the port, wait for it to be free "
                            "(as the service does) instead of exiting with status 3")
    _add_store_flags(serve)

    pull = sub.add_parser("pull", help="install a catalog model, a Hugging Face model, or a "
                                       "local .gguf")
    pull.add_argument("source", help="catalog name (`mlxjan list --available`); Hugging Face "
                                     "`org/repo[@revision]` (MLX) or "
                                     "`org/repo[@revision]:file.gguf`; or a .gguf file's path")
    pull.add_argument("--id", dest="model_id",
                      help="model id for a pulled or imported model (default: from its name)")
    pull.add_argument("--engine", choices=["auto", "mlx", "llamacpp"],
                      help="pick a catalog model's download for this engine (default: auto)")
    pull.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_store_flags(pull)

    create = sub.add_parser("create", help="make a model from an installed one with another "
                                           "chat template (weights hard-linked)")
    create.add_argument("model_id", help="id of the new model")
    create.add_argument("--from", dest="base", required=True, help="installed model id")
    create.add_argument("--chat-template", type=Path, required=True,
                        help="a Jinja chat template file (Hugging Face style)")
    _add_store_flags(create)

    ls = sub.add_parser("list", help="list installed models (or, with --available, the "
                                     "catalog)")
    ls.add_argument("--available", action="store_true",
                    help="the catalog: sizes for this engine, installed, fits the memory budget")
    ls.add_argument("--engine", choices=["auto", "mlx", "llamacpp"],
                    help="with --available: sizes for this engine (default: auto)")
    _add_store_flags(ls)

    convert = sub.add_parser("convert", help="convert a GGUF model or HF folder to MLX")
    convert.add_argument("source", help="installed GGUF model id, .gguf file or HF folder")
    convert.add_argument("--to", choices=["mlx"], default="mlx")
    convert.add_argument("--q-bits", type=int, choices=[4, 8], help="quantise to 4 or 8 bits")
    convert.add_argument("--q-group-size", type=int, choices=[32, 64, 128], default=64)
    convert.add_argument("--dtype", choices=["float16", "bfloat16", "float32"])
    convert.add_argument("--id", dest="model_id", help="id of the new model")
    convert.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_store_flags(convert)

    rm = sub.add_parser("rm", help="remove an installed model")
    rm.add_argument("model_id")
    _add_store_flags(rm)

    service = sub.add_parser("service", help="run the server at login (launchd / systemd)")
    service.add_argument("action", choices=["install", "uninstall", "start", "stop", "restart",
                                            "status", "logs"])
    service.add_argument("--manager", choices=["auto", "launchd", "systemd"], default="auto")

    for action, text in (("load", "start a model's worker in the running server now"),
                         ("unload", "end a model's worker; its memory returns")):
        cmd = sub.add_parser(action, help=text)
        cmd.add_argument("model_id")
        if action == "load":
            cmd.add_argument("--keep-alive", help="how long it stays loaded once idle: "
                                                  "seconds or e.g. 10m; -1 until unloaded")
        cmd.add_argument("--host")
        cmd.add_argument("--port", type=int)
        cmd.add_argument("--api-key")
    ps = sub.add_parser("ps", help="show what the running server holds")
    ps.add_argument("--host")
    ps.add_argument("--port", type=int)
    ps.add_argument("--api-key")

    doctor = sub.add_parser("doctor", help="check port, service, models and memory")
    doctor.add_argument("--port", type=int)
    _add_store_flags(doctor)
    return parser


def cmd_pull(settings: Settings, source: str, model_id: str | None, quiet: bool) -> int:
    from mlxjan.models.curated import choose, fit_line, fits, pull_choice
    from mlxjan.models.fetch import pull
    from mlxjan.models.hf import HubConfig, parse_hf_ref, pull_hf

    store = ModelStore(settings.data_dir)
    choice = choose(source, settings.resolved_engine())
    ref = parse_hf_ref(source) if choice is None else None
    if choice is not None:
        budget = settings.memory_budget()
        print(fit_line(choice, budget), flush=True)
        if not fits(choice, budget):
            print(f"mlxjan: warning: {choice.id} will not load within the memory budget; "
                  "raise memory_budget_bytes (MLXJAN_MEMORY_BUDGET_BYTES) to run it",
                  file=sys.stderr)
        manifest = pull_choice(store, choice, settings, model_id=model_id, progress=not quiet)
    elif ref is not None and not Path(source).expanduser().exists():
        manifest = pull_hf(store, ref, HubConfig.from_settings(settings), model_id=model_id,
                           progress=not quiet)
    else:
        manifest = pull(store, source, model_id=model_id, progress=not quiet)
    print(f"{manifest.id}: installed ({manifest.size / 1e6:.1f} MB, sha256 {manifest.sha256})")
    return 0


def cmd_list(settings: Settings, available: bool) -> int:
    if available:
        return cmd_list_available(settings)
    models = ModelStore(settings.data_dir).list()
    if not models:
        print("no models installed; try `mlxjan pull qwen2.5-coder-0.5b-instruct` "
              "or see `mlxjan list --available`")
        return 0
    print(f"{'ID':40} {'KIND':9} {'FORMAT':6} {'SIZE':>10} {'CONTEXT':>8}")
    for m in models:
        print(f"{m.id:40} {m.kind:9} {m.format:6} {m.size / 1e6:>8.1f}MB "
              f"{m.context_length or '-':>8}")
    return 0


def cmd_list_available(settings: Settings) -> int:
    from mlxjan.models.curated import available, human_size

    engine, budget = settings.resolved_engine(), settings.memory_budget()
    print(f"catalog for the {engine} engine; memory budget {human_size(budget)}")
    print(f"{'NAME':28} {'FORMAT':6} {'SIZE':>8} {'INSTALLED':9} {'FITS':4}  DESCRIPTION")
    for row in available(ModelStore(settings.data_dir), engine, budget):
        print(f"{row.choice.id:28} {row.choice.format:6} {human_size(row.choice.size):>8} "
              f"{'yes' if row.installed else '-':9} {'yes' if row.fits else 'NO':4}  "
              f"{row.choice.description}")
    return 0


def cmd_convert(settings: Settings, args: argparse.Namespace) -> int:
    from converters.gguf_to_mlx import ConvertOptions
    from converters.install import convert_to_store

    options = ConvertOptions(dtype=args.dtype, q_bits=args.q_bits,
                             q_group_size=args.q_group_size, progress=not args.quiet)
    manifest = convert_to_store(ModelStore(settings.data_dir), args.source,
                                model_id=args.model_id, options=options)
    print(f"{manifest.id}: installed ({manifest.size / 1e6:.1f} MB, MLX {manifest.architecture})")
    return 0


def cmd_create(settings: Settings, args: argparse.Namespace) -> int:
    from mlxjan.models.derive import create_variant

    try:
        template = args.chat_template.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"mlxjan: cannot read {args.chat_template}: {exc.strerror}", file=sys.stderr)
        return 1
    manifest = create_variant(ModelStore(settings.data_dir), args.base, args.model_id, template)
    print(f"{manifest.id}: installed ({args.base}'s weights, chat template from "
          f"{args.chat_template.name})")
    return 0


def cmd_rm(settings: Settings, model_id: str) -> int:
    if not ModelStore(settings.data_dir).remove(model_id):
        print(f"{model_id}: not installed", file=sys.stderr)
        return 1
    print(f"{model_id}: removed")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ValidationError as exc:
        print(f"mlxjan: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        if args.command == "serve":
            from mlxjan.runner import serve

            return serve(settings)
        if args.command == "pull":
            return cmd_pull(settings, args.source, args.model_id, args.quiet)
        if args.command == "create":
            return cmd_create(settings, args)
        if args.command == "list":
            return cmd_list(settings, args.available)
        if args.command == "service":
            from mlxjan.service import manager_for

            print(manager_for(args.manager).run(args.action))
            return 0
        if args.command == "ps":
            from mlxjan.runner import ps

            return ps(settings)
        if args.command in ("load", "unload"):
            from mlxjan.runner import load_or_unload

            return load_or_unload(settings, args.model_id, args.command,
                                  getattr(args, "keep_alive", None))
        if args.command == "doctor":
            from mlxjan.doctor import doctor

            return doctor(settings)
        if args.command == "convert":
            return cmd_convert(settings, args)
        return cmd_rm(settings, args.model_id)
    except PortInUseError as exc:
        print(f"mlxjan: {exc.message}", file=sys.stderr)
        return EXIT_PORT_IN_USE
    except MlxjanError as exc:
        print(f"mlxjan: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
