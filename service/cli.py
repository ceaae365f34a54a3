"""`rmad`: one command for every process and tool.

    rmad run       ingest + worker + api in one process (embedded bus/state unless Kafka/Redis are configured)
    rmad api       the HTTP API only
    rmad ingest    the configured sources only
    rmad worker    the streaming scorer only
    rmad train|evaluate|export   the model tools (need the `train` extra)
    rmad score     score a file offline with the runtime's feature and ONNX code

Parts add their subcommands through `SUBCOMMANDS` (module path with `add_arguments(parser)` and `run(args)`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from service.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from service.runtime import Runtime

# name -> (module implementing add_arguments/run, help). Missing modules are listed as unavailable.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("models.cli_train", "train a model from ../shared/data (needs the train extra)"),
    "evaluate": ("models.cli_evaluate", "evaluate models, baselines and ablations; print the tables"),
    "export": ("models.cli_export", "export a trained model to ONNX with its manifest"),
    "score": ("service.scoring.offline", "score a file offline with the runtime's bar, window and ONNX code"),
    "keys": ("service.api.keys_cli", "create, revoke and list API keys"),
    "simulate": ("service.ingest.simulator.simulate_cli", "write a simulated market with labelled anomalies to files"),
}

_EXTRA_HINT = "install the extra it belongs to, e.g. `pip install -e .[train,cpu]`"

SERVE_ROLES = {"run": {"ingest", "worker", "api"}, "api": {"api"}, "ingest": {"ingest"}, "worker": {"worker"}}


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as err:
        print(f"rmad: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _serve(roles: set[str], args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.app import create_app
    from service.api.ops import create_ops_app
    from service.roles import build
    from service.runtime import Runtime

    settings = _settings_or_exit()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workers = getattr(args, "workers", 1)
    if workers > 1 and getattr(args, "fd", None) is None:
        return _serve_workers(workers, args, settings)
    runtime = Runtime.from_settings(settings)
    for component in build(roles, runtime, args):
        runtime.add(component)
    # every role serves HTTP: the api role the whole API, the others /healthz, /readyz and /metrics for probes
    app = create_app(runtime) if "api" in roles else create_ops_app(runtime)
    grace = settings.shutdown_grace_s
    config = uvicorn.Config(
        app,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=settings.log_level.lower(),
        # HTTP connections get a quarter of the grace period to finish; the runtime's drain gets the rest
        timeout_graceful_shutdown=max(1, int(grace * HTTP_DRAIN_SHARE)),
        lifespan="on",
    )
    server = _GracefulServer(config, runtime, grace)
    if getattr(args, "fd", None) is not None:  # one of `rmad api --workers N`: the supervisor's socket
        from service.api.workers import inherited

        server.run(sockets=[inherited(args.fd)])
    else:
        server.run()
    if server.deadline is not None:
        # stopped by a signal and drained: exit now. Interpreter teardown (C-extension thread pools, the daemon
        # watchdog frozen meanwhile) can take a second or more and would push the exit past the grace period.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _serve_workers(n: int, args: argparse.Namespace, settings: Settings) -> int:
    """`rmad api --workers N`: bind once, run N `rmad api` children on the socket (service/api/workers.py)."""
    from service.api.workers import WorkersError, bind, check_workers, supervise

    try:
        check_workers(n, settings.embedded_state)
    except WorkersError as err:
        print(f"rmad: {err}", file=sys.stderr)
        return 2
    sock = bind(args.host or settings.host, args.port or settings.port)
    extra = ["--source", args.source] if args.source else []
    return supervise(
        n,
        lambda fd: [sys.executable, "-m", "service.cli", "api", "--fd", str(fd), *extra],
        sock,
        settings.shutdown_grace_s,
    )


HTTP_DRAIN_SHARE = 0.25
EXIT_MARGIN_S = 0.75  # kept back from the grace period for the interpreter to exit after the runtime stopped


class _GracefulServer:
    """uvicorn's server with one deadline for the whole shutdown.

    On the first SIGTERM/SIGINT: the runtime reports not ready and ends open alert streams (`begin_shutdown`),
    uvicorn stops accepting and drains HTTP, then the lifespan stops the runtime against the same deadline
    (`RMAD_SHUTDOWN_GRACE_S` after the signal). A watchdog thread ends the process at the deadline whatever is
    still running (a broker that never answers a flush), so an orchestrator never has to SIGKILL it.
    """

    def __init__(self, config: Any, runtime: Runtime, grace_s: float) -> None:
        import uvicorn

        outer = self

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                outer.on_signal(sig)
                super().handle_exit(sig, frame)
                # uvicorn re-raises captured signals after shutdown (exit status -15); a SIGTERM drained within
                # the grace period is a clean stop and exits 0 (the watchdog exits 3 when the drain overruns)
                captured = getattr(self, "_captured_signals", None)
                if sig == signal.SIGTERM and isinstance(captured, list) and sig in captured:
                    captured.remove(sig)

        self.server = Server(config)
        self.runtime = runtime
        self.grace_s = grace_s
        self.deadline: float | None = None

    def on_signal(self, sig: int) -> None:
        if self.deadline is not None:
            return
        self.deadline = time.monotonic() + self.grace_s
        logging.getLogger("rmad").info("signal %d: shutting down within %.1f s", sig, self.grace_s)
        self.runtime.stop_deadline = self.deadline - EXIT_MARGIN_S
        try:  # the handler runs on the loop's thread, between two callbacks: defer the work to the loop
            asyncio.get_running_loop().call_soon_threadsafe(self.runtime.begin_shutdown)
        except RuntimeError:
            self.runtime.begin_shutdown()
        threading.Thread(target=self._watchdog, name="shutdown-watchdog", daemon=True).start()

    def _watchdog(self) -> None:
        assert self.deadline is not None
        time.sleep(max(0.0, self.deadline - time.monotonic()))
        logging.getLogger("rmad").error("shutdown took longer than %.1f s: exiting now", self.grace_s)
        logging.shutdown()
        os._exit(3)

    def run(self, sockets: list[Any] | None = None) -> None:
        self.server.run(sockets=sockets)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmad", description="rmad-crypto: real-time crypto anomaly detection")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, roles in SERVE_ROLES.items():
        p = sub.add_parser(name, help=f"serve: {' + '.join(sorted(roles))}")
        p.add_argument("--host", default=None, help="bind address (default RMAD_HOST)")
        p.add_argument("--port", type=int, default=None, help="port (default RMAD_PORT)")
        p.add_argument(
            "--source",
            default=None,
            help="market source: live (exchanges), simulator, or replay:PATH (default RMAD_INGEST_SOURCE)",
        )
        if name == "api":
            p.add_argument(
                "--workers",
                type=int,
                default=1,
                help="API processes on one socket (> 1 needs RMAD_REDIS_URL: they share state only through Redis)",
            )
            p.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)  # a worker's inherited socket
    for name, (module, help_text) in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if (exc.name is not None and module.startswith(exc.name + ".")) or exc.name == module:
                continue  # this part is not built yet
            missing = exc.name or str(exc)
            p = sub.add_parser(name, help=f"{help_text} [unavailable: needs {missing}]")
            p.set_defaults(_unavailable=f"rmad {name} needs the Python module {missing!r}: {_EXTRA_HINT}")
            continue
        p = sub.add_parser(name, help=help_text)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in SERVE_ROLES:
        return _serve(SERVE_ROLES[args.command], args)
    if getattr(args, "_unavailable", None):
        print(args._unavailable, file=sys.stderr)
        return 2
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
