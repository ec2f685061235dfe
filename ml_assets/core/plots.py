"""Figures an operator looks at rather than reads, as PNG bytes: model quality, tuning, trip durations, drift.

matplotlib's object-oriented `Figure` (no pyplot) renders with Agg and keeps no global state, so
plots are safe in any process, Dagster's run workers included. Each figure is small on purpose:
it travels inside Dagster metadata as a data URI.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping

import numpy as np

MAX_PNG_BYTES = 150_000
SIZE, DPI = (6.0, 4.0), 80
MAX_MINUTES = 60  # cleaned trips last 1–60 min
MIN_TRIALS_FOR_IMPORTANCE = 5

Plot = Callable[[], bytes]


class NoPlot(ValueError):
    """The data does not allow this plot (e.g. too few trials); not an error in the pipeline."""


def _figure(ncols: int = 1, labels_of_any_length: bool = False):
    """A figure and its axes. matplotlib's default margins fit the short labels most figures have;
    fitting the layout to the labels instead (constrained) costs a third of the drawing, so only
    figures labelled by names of any length (features, hyperparameters) pay for it."""
    from matplotlib.figure import Figure

    layout = "constrained" if labels_of_any_length else None
    figure = Figure(figsize=(SIZE[0] * ncols, SIZE[1]), dpi=DPI, layout=layout)
    return figure, figure.subplots(1, ncols)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    png = buffer.getvalue()
    if len(png) > MAX_PNG_BYTES:
        raise ValueError(f"the PNG has {len(png)} bytes, more than {MAX_PNG_BYTES}")
    return png


def predicted_vs_actual(actual, predicted) -> bytes:
    """Test-month trips binned by (actual, predicted) duration: a hexbin stays readable at 60k points."""
    figure, ax = _figure()
    cells = ax.hexbin(
        actual, predicted, gridsize=40, bins="log", mincnt=1, cmap="viridis", extent=(0, MAX_MINUTES, 0, MAX_MINUTES)
    )
    ax.plot([0, MAX_MINUTES], [0, MAX_MINUTES], color="red", linewidth=1, label="perfect prediction")
    figure.colorbar(cells, ax=ax, label="trips (log scale)")
    ax.set(xlabel="actual duration (min)", ylabel="predicted duration (min)", title="Predicted vs actual, test month")
    ax.legend(loc="upper left")
    return _png(figure)


def residual_histogram(actual, predicted) -> bytes:
    residuals = np.asarray(predicted, dtype=float) - np.asarray(actual, dtype=float)
    figure, ax = _figure()
    ax.hist(residuals, bins=np.linspace(-30, 30, 61), color="tab:blue")
    ax.axvline(0, color="red", linewidth=1)
    rmse = float(np.sqrt(np.mean(residuals**2)))
    ax.set(
        xlabel="predicted − actual (min)",
        ylabel="trips",
        title=f"Residuals, test month (RMSE {rmse:.3f}, mean {residuals.mean():+.3f})",
    )
    return _png(figure)


def feature_importance(gain: Mapping[str, float], top: int = 15) -> bytes:
    """XGBoost's total gain per feature: how much each feature reduced the loss over all splits."""
    if not gain:
        raise NoPlot("the model has no splits, so no feature importance")
    ranked = sorted(gain.items(), key=lambda item: item[1])[-top:]
    figure, ax = _figure(labels_of_any_length=True)
    ax.barh([name for name, _ in ranked], [value for _, value in ranked], color="tab:green")
    ax.set(xlabel="gain", title="Feature importance (gain)")
    return _png(figure)


def rmse_comparison(rmses: Mapping[str, float | None]) -> bytes:
    """Test-month RMSE of several models side by side; models without a value (no champion yet) are left out."""
    shown = {name: value for name, value in rmses.items() if value is not None}
    figure, ax = _figure()
    bars = ax.bar(list(shown), list(shown.values()), color=["tab:blue", "tab:orange", "tab:gray"][: len(shown)])
    ax.bar_label(bars, fmt="%.3f")
    ax.set(ylabel="RMSE (min)", title="Test-month RMSE (lower is better)")
    return _png(figure)


def optimization_history(study) -> bytes:
    """Every trial of the optuna study, earlier materializations included; pruned ones at their last report."""
    from optuna.trial import TrialState

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED and t.intermediate_values]
    if not complete:
        raise NoPlot("the study has no finished trial")
    figure, ax = _figure()
    ax.scatter([t.number for t in complete], [t.value for t in complete], color="tab:blue", label="finished")
    if pruned:
        ax.scatter(
            [t.number for t in pruned],
            [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
            marker="x",
            color="tab:gray",
            label="pruned (last reported)",
        )
    best = np.minimum.accumulate([t.value for t in complete])
    ax.step([t.number for t in complete], best, where="post", color="tab:red", label="best so far")
    ax.set(xlabel="trial", ylabel="validation RMSE (min)", title=f"Optuna study {study.study_name}")
    ax.legend()
    return _png(figure)


def param_importances(study) -> bytes:
    """optuna's fANOVA importance of each hyperparameter for the validation RMSE."""
    import optuna
    from optuna.trial import TrialState

    finished = len(study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]))
    if finished < MIN_TRIALS_FOR_IMPORTANCE:
        raise NoPlot(
            f"parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} finished trials; the study has {finished}"
        )
    importances = optuna.importance.get_param_importances(study)
    ranked = sorted(importances.items(), key=lambda item: item[1])
    figure, ax = _figure(labels_of_any_length=True)
    ax.barh([name for name, _ in ranked], [value for _, value in ranked], color="tab:purple")
    ax.set(xlabel="importance (fANOVA)", title=f"Hyperparameter importance ({finished} trials)")
    return _png(figure)


def duration_histogram(durations) -> bytes:
    durations = np.asarray(durations, dtype=float)
    figure, ax = _figure()
    ax.hist(durations, bins=np.arange(0, MAX_MINUTES + 1), color="tab:blue")
    ax.axvline(durations.mean(), color="red", linewidth=1, label=f"mean {durations.mean():.1f} min")
    ax.set(xlabel="duration (min)", ylabel="trips", title=f"Trip duration ({len(durations):,} trips)")
    ax.legend()
    return _png(figure)


def drift(previous, current, previous_month: str, month: str) -> bytes:
    """Duration and distance of M against M-1, as shares, so months of different sizes compare."""
    figure, axes = _figure(ncols=2)
    distance_limit = float(np.nanpercentile(np.concatenate([previous["trip_distance"], current["trip_distance"]]), 99))
    for ax, column, bins, unit in (
        (axes[0], "duration", np.arange(0, MAX_MINUTES + 1), "min"),
        (axes[1], "trip_distance", np.linspace(0, distance_limit, 50), "miles"),
    ):
        for frame, label, color in ((previous, previous_month, "tab:gray"), (current, month, "tab:blue")):
            ax.hist(frame[column], bins=bins, density=True, histtype="step", linewidth=1.5, color=color, label=label)
        ax.set(xlabel=f"{column} ({unit})", ylabel="share of trips", title=f"{column}: {month} vs {previous_month}")
        ax.legend()
    return _png(figure)


def decay_curves(curves: Mapping[str, Mapping[int, float]], champion: str | None, most: int = 12) -> bytes:
    """Each version's RMSE against months since its test month (0: the test month itself), newest `most`
    versions; the champion drawn thick and named in the legend."""
    if not curves:
        raise NoPlot("no registered model was tested before this month")
    figure, ax = _figure()
    shown = sorted(curves, key=int)[-most:]
    for version in shown:
        steps = sorted(curves[version])
        is_champion = version == champion
        ax.plot(
            steps,
            [curves[version][step] for step in steps],
            marker="o",
            linewidth=3 if is_champion else 1,
            color="tab:red" if is_champion else None,
            alpha=1 if is_champion else 0.6,
            label=f"v{version}" + (" (champion)" if is_champion else ""),
            zorder=3 if is_champion else 2,
        )
    ax.set(xlabel="months since the model's test month", ylabel="RMSE (min)", title="Realized RMSE by model version")
    ax.legend(fontsize="small", ncols=2)
    return _png(figure)


def draw_all(figures: Mapping[str, Plot], log) -> tuple[dict[str, bytes], dict[str, str]]:
    """Every figure as PNG bytes, and why each missing one is missing (`log`: a logger to say so).

    A figure that cannot be drawn (`NoPlot`) or whose drawing fails is left out, never raised.
    """
    pngs, missing = {}, {}
    for name, plot in figures.items():
        try:
            pngs[name] = plot()
        except NoPlot as reason:
            missing[name] = str(reason)
            log.info(f"no {name} plot: {reason}")
        except Exception as error:  # noqa: BLE001 (any plotting bug)
            missing[name] = f"plotting failed: {type(error).__name__}: {error}"
            log.warning(f"no {name} plot: {missing[name]}")
    return pngs, missing


def model_plots(actual, predicted, gain: Mapping[str, float], rmses: Mapping[str, float | None]) -> dict[str, Plot]:
    """trained_model's figures, each drawn when called, so that one failing figure spares the others."""
    return {
        "predicted_vs_actual": lambda: predicted_vs_actual(actual, predicted),
        "residuals": lambda: residual_histogram(actual, predicted),
        "feature_importance": lambda: feature_importance(gain),
        "rmse": lambda: rmse_comparison(rmses),
    }


def study_plots(study) -> dict[str, Plot]:
    """best_params' figures."""
    return {
        "optimization_history": lambda: optimization_history(study),
        "param_importances": lambda: param_importances(study),
    }
