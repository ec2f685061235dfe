"""Deployment plugins: where steps execute (executor) and how run monitoring checks run workers."""
