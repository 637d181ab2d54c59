"""`telecrm analytics clv` and `telecrm analytics churn`: fit on the database's event log and
print the fitted parameters or the held-out evaluation. Aggregates only: no patient appears."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import typer

from telecrm.analytics import event_arrays as ea
from telecrm.analytics.churn import DEFAULT_HORIZON_DAYS, evaluate_churn, train_churn_model
from telecrm.analytics.clv import ModelNotFitted
from telecrm.analytics.clv_scores import HORIZON_DAYS, fit_clv, predict_clv


def _log_and_now(as_of: str | None) -> tuple[ea.EventArrays, float]:
    from telecrm.cli_support import runtime as open_runtime

    runtime = open_runtime()
    log = ea.from_store(runtime.engine, runtime.cipher())
    if as_of:
        return log, ea.to_days(datetime.fromisoformat(as_of))
    return log, ea.to_days(runtime.clock.now())


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def clv(
    as_of: str | None = typer.Option(None, help="Cutoff (ISO date); default: now"),
) -> None:
    """Fit BG/NBD, Gamma-Gamma and sBG on history before the cutoff; print parameters."""
    log, cutoff = _log_and_now(as_of)
    try:
        model = fit_clv(log, cutoff)
    except ModelNotFitted as exc:
        _fail(f"cannot fit lifetime value: {exc}")
        return
    p = model.purchases
    g = model.spend
    typer.echo(f"buyers {model.buyers}, repeat buyers {model.repeat_buyers}")
    typer.echo(f"BG/NBD      r={p.r:.4g} alpha={p.alpha:.4g} days a={p.a:.4g} b={p.b:.4g}")
    typer.echo(f"Gamma-Gamma p={g.p:.4g} q={g.q:.4g} gamma={g.gamma:.4g}")
    typer.echo(f"            mean order value ${g.population_mean:.2f}")
    if model.retention is not None:
        s = model.retention.pooled
        typer.echo(
            f"sBG pooled  alpha={s.alpha:.4g} beta={s.beta:.4g} ({model.subscriptions} subs)"
        )
        typer.echo(f"            cohorts with their own fit: {len(model.retention.cohorts)}")
    value = predict_clv(model, log, cutoff).clv_12m
    customers = value[value > 0]
    if customers.size:
        typer.echo(
            f"clv_12m (undiscounted, {HORIZON_DAYS:.0f} days): {customers.size} customers,"
            f" total ${customers.sum():,.0f}, median ${np.median(customers):.2f}"
        )


def churn(
    as_of: str | None = typer.Option(None, help="End of observed data (ISO date); default: now"),
    horizon: int = typer.Option(DEFAULT_HORIZON_DAYS, min=7, help="Churn window, days"),
    method: str = typer.Option("sigmoid", help="Calibration: sigmoid or isotonic"),
) -> None:
    """Train on three earlier cutoffs, evaluate on the last fully observed window."""
    if method not in ("sigmoid", "isotonic"):
        typer.secho("--method must be sigmoid or isotonic", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    log, end = _log_and_now(as_of)
    evaluate_at = end - horizon
    train_at = tuple(evaluate_at - horizon * k for k in (1, 2, 3))
    try:
        model = train_churn_model(log, train_at, horizon_days=horizon, method=method)
        r = evaluate_churn(model, log, evaluate_at)
    except ModelNotFitted as exc:
        _fail(f"cannot train the churn model: {exc}")
        return
    typer.echo(f"trained on {model.rows} rows ({model.method} calibration)")
    typer.echo(f"evaluated on {r.rows} customers, churn rate {r.base_rate:.3f}")
    typer.echo(f"AUC {r.auc:.3f} (recency only {r.recency_only_auc:.3f})")
    typer.echo(f"Brier {r.brier:.4f} (base rate {r.brier_of_base_rate:.4f})")
    typer.echo(f"calibration error {r.calibration_error:.4f}")
    typer.echo(f"top decile churn {r.top_decile_rate:.3f}, lift {r.lift_top_decile:.2f}")
    typer.echo("reliability: predicted -> observed (rows)")
    for b in r.bins:
        typer.echo(f"  {b.mean_predicted:.3f} -> {b.observed_rate:.3f} ({b.rows})")


def register(app: typer.Typer) -> None:
    app.command("clv")(clv)
    app.command("churn")(churn)
