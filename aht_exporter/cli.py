"""Command line: Prometheus exporter conventions (dotted long flags), exit codes 0 / 1 / 2."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aht_exporter import __version__
from aht_exporter.clock import SystemClock
from aht_exporter.config import Config, redacted
from aht_exporter.httpclient import warm_up
from aht_exporter.logs import install_redactor, setup_logging
from aht_exporter.memory import freeze_startup_objects, tune_malloc
from aht_exporter.model import ConfigError
from aht_exporter.redact import Redactor
from aht_exporter.registry import load_config
from aht_exporter.reload import Reloader
from aht_exporter.scheduler import Exporter
from aht_exporter.server import TELEMETRY_PATH, check_telemetry_path, parse_listen_address, start_server
from aht_exporter.state import StateStore
from aht_exporter.webconfig import WebConfig, load_web_config

log = logging.getLogger("aht_exporter")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_CONFIG = "config.yaml"
DEFAULT_LISTEN = ":9779"
DEFAULT_STORAGE = "data/"


class _HelpFormatter(argparse.HelpFormatter):
    """Lists the demo's faults in the help of `--demo.fault` when the help is printed, not when the parser is
    built: they live with the simulators, which the CLI imports only in demo mode."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if action.dest != "demo_fault" or text is None:
            return text
        from aht_exporter.simulator.faults import Fault

        return text + " (faults: " + ", ".join(f.value for f in Fault) + ")"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aht-exporter",
        description="Prometheus exporter for contact-center Average Handle Time.",
        allow_abbrev=False,
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--config.file", dest="config_file", metavar="PATH", help=f"config file (default {DEFAULT_CONFIG})")
    p.add_argument(
        "--web.listen-address",
        dest="listen",
        action="append",
        metavar="ADDR",
        help="address to serve on (default :9779); repeat it to serve on several",
    )
    p.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default=TELEMETRY_PATH,
        metavar="PATH",
        help=f"path under which to expose metrics (default {TELEMETRY_PATH})",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config",
        metavar="PATH",
        help="TLS and basic-auth config, in the Prometheus exporter-toolkit format",
    )
    p.add_argument(
        "--web.enable-lifecycle",
        dest="enable_lifecycle",
        action="store_true",
        help="serve POST /-/reload, which re-reads the config file and its *_file secrets as SIGHUP does "
        "(200 when the new config runs; 500 and the reason when it is refused and the old one keeps running); "
        "off by default, as in Prometheus, and guarded by --web.config.file like every endpoint but /-/healthy",
    )
    p.add_argument(
        "--storage.path",
        dest="storage_path",
        metavar="DIR",
        help=f"where the state that survives a restart is kept: each source's buckets and counters, in SQLite "
        f"(default {DEFAULT_STORAGE}; with --demo, none unless given; empty: memory only, and a restart resets "
        "the _total counters and fetches each source's longest window again)",
    )
    p.add_argument("--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"])
    p.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config, print it with secrets redacted, and exit",
    )
    mode.add_argument("--once", action="store_true", help="poll every source once, print the exposition, exit")
    mode.add_argument(
        "--probe",
        action="store_true",
        help="poll every source once and report what the vendor sent and what would be exported; "
        "exit 0 when every source looks sane, 1 otherwise",
    )
    p.add_argument(
        "--record",
        metavar="DIR",
        help="with --probe: also write each vendor reply, redacted, under DIR/<source>/ (for test fixtures)",
    )
    p.add_argument("--demo", action="store_true", help="run against the built-in provider simulators")
    p.add_argument(
        "--demo.fault",
        dest="demo_fault",
        action="append",
        default=[],
        metavar="PROVIDER:FAULT[:COUNT][@AFTER]",
        help="with --demo: make a simulator misbehave, e.g. genesys:503, genesys:401:4 or koreai:503@2: "
        "the next COUNT data requests (all without COUNT; a poll tries each request up to 4 times) fail, "
        "starting after AFTER successful polls of each of the provider's sources",
    )
    p.add_argument("--version", action="version", version=f"aht-exporter {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["backfill"]:
        from aht_exporter import backfill

        setup_logging("info", "logfmt")
        return backfill.main(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        args.web = load_web_config(args.web_config) if args.web_config else None
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    args.listen = args.listen or [DEFAULT_LISTEN]
    try:
        for address in args.listen:
            parse_listen_address(address)
    except ValueError as exc:
        print(f"aht-exporter: --web.listen-address: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        check_telemetry_path(args.telemetry_path)
    except ValueError as exc:
        print(f"aht-exporter: --web.telemetry-path: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.demo_fault and not args.demo:
        print("aht-exporter: --demo.fault needs --demo", file=sys.stderr)
        return EXIT_USAGE
    if args.record and not args.probe:
        print("aht-exporter: --record needs --probe", file=sys.stderr)
        return EXIT_USAGE
    if args.demo:
        if args.config_file:
            print(
                "aht-exporter: --demo runs the built-in simulators and takes no --config.file",
                file=sys.stderr,
            )
            return EXIT_USAGE
        return asyncio.run(_run_demo(args))
    try:
        config = load_config(args.config_file or DEFAULT_CONFIG)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    try:
        return _run(config, args)
    except ConfigError as exc:  # found at start, before serving: the CA bundle (httpclient.reload_tls_context)
        print(exc, file=sys.stderr)
        return EXIT_USAGE


def _run(config: Config, args: argparse.Namespace) -> int:
    _install_redaction(config)
    if args.check_config:
        sys.stdout.write(redacted(config))
        return EXIT_OK
    if args.once:
        return asyncio.run(run_once(config))
    if args.probe:
        return asyncio.run(run_probe(config, args.record))
    return asyncio.run(
        serve(
            config,
            args.listen,
            args.web,
            telemetry_path=args.telemetry_path,
            config_path=args.config_file or DEFAULT_CONFIG,
            lifecycle=args.enable_lifecycle,
            storage=_storage(args.storage_path, DEFAULT_STORAGE),
        )
    )


def _storage(path: str | None, default: str | None) -> Path | None:
    """The state store's directory: the flag's, else `default`; an empty value keeps everything in memory."""
    chosen = default if path is None else path
    return Path(chosen) if chosen else None


def _install_redaction(config: Config) -> None:
    install_redactor(Redactor.for_config(config))


async def _run_demo(args: argparse.Namespace) -> int:
    from aht_exporter.simulator.demo import Demo

    demo = Demo(SystemClock())
    config = await demo.start()
    try:
        for spec in args.demo_fault:
            try:
                demo.inject(spec)
            except ValueError as exc:
                print(f"aht-exporter: --demo.fault: {exc}", file=sys.stderr)
                return EXIT_USAGE
        _install_redaction(config)
        if args.check_config:
            sys.stdout.write(redacted(config))
            return EXIT_OK
        if args.once:
            return await run_once(config)
        if args.probe:
            return await run_probe(config, args.record)
        log.info("demo: simulators running", extra={n: s.base_url for n, s in demo.simulators.items()})
        # The simulators stop inside serve's shutdown budget, not after it: a simulator still holding a
        # request the exporter gave up on must not push the exit past the 10 s a SIGTERM allows (README,
        # Running it for real).
        return await serve(
            config,
            args.listen,
            args.web,
            after_stop=demo.stop,
            on_start=demo.watch,
            telemetry_path=args.telemetry_path,
            lifecycle=args.enable_lifecycle,
            storage=_storage(args.storage_path, None),
        )
    finally:
        await demo.stop()


async def run_once(config: Config) -> int:
    exporter = Exporter(config)
    try:
        ok = await exporter.poll_all()
        rendered = await exporter.rendered_now()
    finally:
        await exporter.aclose()
    # The exposition's own bytes (UTF-8): a vendor's name in a script the terminal's encoding lacks must not
    # turn into a traceback.
    sys.stdout.flush()
    sys.stdout.buffer.write(rendered.text)
    sys.stdout.buffer.flush()
    return EXIT_OK if ok else EXIT_FAILURE


async def run_probe(config: Config, record: str | None) -> int:
    from aht_exporter import probe

    return await probe.run_probe(config, sys.stdout, record=Path(record) if record else None)


SWITCH_INTERVAL = 0.002
"""Seconds a thread keeps the GIL while another waits for it (CPython's default: 0.005). The event loop waits
up to that long each time it takes the GIL back from a poll's or a render's worker thread (after each
select(), for one), and a stall of the loop is a few such waits: at 20,000 agents, the longest 16.0 to 18.7
ms with CPython's 5 ms, 11.5 to 15.4 ms with 2 ms, for no CPU cost we could measure (bench/loop_stall.py,
bench/poll.py; docs/performance.md, "Values the collector never walks")."""


def prepare_process(*, freeze: bool = True) -> None:
    """What `serve` does before it builds the exporter (and the benchmarks, to measure what runs): malloc
    tuned before any worker thread allocates, the GIL handed to the event loop sooner (`SWITCH_INTERVAL`),
    the TLS context and the HTTP stack loaded, and what start-up left alive frozen out of the collector's
    walks. Before the exporter is built: its runners, providers and stores are replaced by reloads, and a
    frozen cycle among them (a runner and its provider refer to each other) would never be freed."""
    tune_malloc()
    sys.setswitchinterval(SWITCH_INTERVAL)
    warm_up()
    if freeze:
        freeze_startup_objects()


async def serve(
    config: Config,
    listen: str | Sequence[str],
    web: WebConfig | None = None,
    *,
    after_stop: Callable[[], Awaitable[None]] | None = None,
    on_start: Callable[[Exporter], None] | None = None,
    telemetry_path: str = TELEMETRY_PATH,
    config_path: str | None = None,
    lifecycle: bool = False,
    storage: Path | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT, then stop within SHUTDOWN_LIMIT: in-flight polls get what is left after
    the server's stop (1 s), `after_stop` (AFTER_STOP_LIMIT, if given) and a margin.

    SIGHUP, and POST /-/reload with `lifecycle`, reload `config_path` (None: nothing to reload, the demo).
    `storage`: the state store's directory (None: memory only)."""
    prepare_process()
    state = StateStore(storage)
    exporter = Exporter(config, state=state)
    reloader = Reloader(exporter, config_path)
    try:
        runner, bound = await start_server(
            exporter, listen, web, telemetry_path=telemetry_path, reloader=reloader if lifecycle else None
        )
    except OSError as exc:
        address = listen if isinstance(listen, str) else ",".join(listen)
        log.error("cannot listen", extra={"address": address, "error": str(exc)})
        await exporter.aclose()
        state.close()
        return EXIT_FAILURE
    log.info(
        "listening",
        extra={
            "address": ",".join(bound),
            "version": __version__,
            "sources": len(config.sources),
            "tls": bool(web and web.ssl_context),
            "basic_auth": bool(web and web.users),
            "lifecycle": lifecycle,
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reloader.request)
    if on_start is not None:
        on_start(exporter)
    exporter.start()
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        _shutdown_watchdog(SHUTDOWN_LIMIT)
        await reloader.aclose()
        reserved = 2.0 + (AFTER_STOP_LIMIT if after_stop else 0.0)
        await exporter.aclose(grace=SHUTDOWN_LIMIT - reserved)
        state.close()
        await runner.cleanup()
        if after_stop is not None:
            try:
                await asyncio.wait_for(after_stop(), AFTER_STOP_LIMIT)
            except TimeoutError:
                log.warning("shutdown: cleanup after the server took too long; exiting anyway")
    return EXIT_OK


SHUTDOWN_LIMIT = 10.0
AFTER_STOP_LIMIT = 2.0  # the demo's simulators, stopped together: simulator.SHUTDOWN_TIMEOUT (1 s) each, and a margin


def _shutdown_watchdog(limit: float) -> None:
    """The last resort: whatever blocks, the process is gone `limit` seconds after the signal."""

    def expire() -> None:
        log.error("shutdown did not finish in time; exiting", extra={"limit": f"{limit:.0f}s"})
        logging.shutdown()
        os._exit(EXIT_FAILURE)

    timer = threading.Timer(limit, expire)
    timer.daemon = True
    timer.start()
