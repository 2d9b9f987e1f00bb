"""The `wharf` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from wharf import __version__
from wharf.config import ConfigError, load_settings

# Exit codes of PRODUCT.md: 0 success, 1 failure, 2 bad usage, 3 refused by a rule.
EXIT_FAILURE, EXIT_USAGE, EXIT_REFUSED = 1, 2, 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wharf")
def main() -> None:
    """Wharf: a self-hosted, trusted container image registry."""


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar="WHARF_DATA_DIR",
    help="Data directory (default ./wharf-data).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="TOML configuration file.",
)
@click.option("--db", help="Metadata store URL (default sqlite:///<data-dir>/wharf.db).")
@click.option("--storage", help="Blob storage URL (default file://<data-dir>/storage).")
@click.option("--http-addr", help="Plain HTTP HOST:PORT (default 127.0.0.1:5000).")
@click.option("--https-addr", help="HTTPS HOST:PORT (needs --tls-cert and --tls-key).")
@click.option("--tls-cert", type=click.Path(path_type=Path), help="PEM certificate (chain).")
@click.option("--tls-key", type=click.Path(path_type=Path), help="PEM private key.")
@click.option(
    "--plain-http",
    is_flag=True,
    default=None,
    help="Serve the registry over plain HTTP (behind a TLS proxy); without it, plain HTTP "
    "only redirects to the HTTPS listener when there is one.",
)
@click.option(
    "--external-url",
    help="How clients reach the registry (https://registry.example.com): where plain HTTP "
    "redirects to.",
)
@click.option(
    "--trusted-proxies",
    metavar="ADDRS",
    help="Proxies whose X-Forwarded-For/-Proto are believed: IP addresses or CIDR networks, "
    "comma-separated (default: none).",
)
@click.option(
    "--allowed-hosts",
    metavar="NAMES",
    help="Host names the registry answers for besides its own, comma-separated (*.DOMAIN, "
    "or * for any); unused with --external-url.",
)
@click.option("--header-timeout", type=float, help="Seconds a request's headers may take (30).")
@click.option("--keepalive-timeout", type=float, help="Seconds an idle connection stays (30).")
@click.option("--max-header-bytes", type=int, help="Largest request headers (65536).")
@click.option("--workers", type=int, help="Worker processes (default 1).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--access-log/--no-access-log", default=None, help="Log every request.")
def serve(config_file: Path | None, **flags: Any) -> None:
    """Run this replica of the registry."""
    from wharf.server import serve as run_server

    try:
        settings = load_settings(config_file, flags)
        settings.check()
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    # Migrations and the admin account are done in a child process, so that the supervisor
    # of the workers never holds SQLAlchemy, alembic and argon2 in its memory.
    _in_child(_prepare, settings)
    if settings.https_addr and settings.tls_managed and not settings.tls_cert.is_file():
        raise click.UsageError(
            f"{settings.tls_cert} does not exist and the cluster has no certificate to write "
            "there: create one with `wharf reconfigure --regenerate-certs` (or --cert-file "
            "--key-file), or give your own files with --tls-cert and --tls-key"
        )
    try:
        run_server(settings)
    except OSError as e:
        click.echo(f"wharf: cannot listen: {e}", err=True)
        sys.exit(EXIT_FAILURE)


@main.command()
def version() -> None:
    """Print the software version."""
    click.echo(__version__)


def _in_child(func: Any, *args: Any) -> None:
    import multiprocessing

    proc = multiprocessing.get_context("fork").Process(target=func, args=args)
    proc.start()
    proc.join()
    if proc.exitcode == 3:  # refused by a rule; the child said why
        sys.exit(3)
    if proc.exitcode != 0:
        click.echo("wharf: could not prepare the data directory (see above)", err=True)
        sys.exit(EXIT_FAILURE)


def _prepare(settings: Any) -> None:
    from wharf.bootstrap import prepare
    from wharf.faults import fault_of

    try:
        prepare(settings)
    except Exception as e:
        # A full disk or an unreachable database: one line that says so, not a traceback.
        fault = fault_of(e)
        if fault is None:
            raise
        click.echo(f"wharf: {fault}", err=True)
        sys.exit(EXIT_FAILURE)


def _register_admin_commands() -> None:
    from wharf.cli import admin, backup, bootstrap, cluster, jobs

    for command in (
        admin.COMMANDS + bootstrap.COMMANDS + cluster.COMMANDS + jobs.COMMANDS + backup.COMMANDS
    ):
        main.add_command(command)


_register_admin_commands()
