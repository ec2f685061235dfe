"""When things run: declarative automation, the new-month sensor, the retrain schedule and their jobs."""
