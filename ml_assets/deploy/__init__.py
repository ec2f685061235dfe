"""Deployment: the instance's plugins (executor, run launcher), the topology's own service commands (MLflow
server and logins, health checks, PostgreSQL secrets), and `local/`, the topology without containers."""
