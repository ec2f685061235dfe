"""NYC-taxi trip-duration model as Dagster software-defined assets."""
