"""`scaleops alerts serve`: run the Alertmanager/Grafana -> Prefect events bridge."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="The alert bridge: Alertmanager and Grafana webhooks -> Prefect events.", no_args_is_help=True
)


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="listen address (default SCALEOPS_ALERTS__HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="listen port (default SCALEOPS_ALERTS__PORT)")] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="accept webhooks without a bearer token (local testing only)")
    ] = False,
) -> None:
    """Receive /alertmanager and /grafana webhooks, emit scaleops.alert.* events; /healthz, /metrics."""
    from scaleops.cli.console import EXIT_FAILED, err, load_cli_settings
    from scaleops.ops.alert_bridge import serve as run_bridge

    settings = load_cli_settings()
    token = settings.alerts.token.get_secret_value() if settings.alerts.token else None
    if token is None and not insecure:
        err.print(
            "[red]alerts:[/red] SCALEOPS_ALERTS__TOKEN is not set (or pass --insecure for local testing)"
        )
        raise typer.Exit(EXIT_FAILED)
    if not settings.prefect_api_url:
        err.print("[red]alerts:[/red] PREFECT_API_URL is not set: the bridge has nowhere to send events")
        raise typer.Exit(EXIT_FAILED)
    listen_host, listen_port = host or settings.alerts.host, port or settings.alerts.port
    err.print(f"alert bridge on http://{listen_host}:{listen_port} -> {settings.prefect_api_url}")
    run_bridge(
        host=listen_host,
        port=listen_port,
        api_url=settings.prefect_api_url,
        token=None if insecure else token,
        max_body_bytes=settings.alerts.max_body_bytes,
    )
