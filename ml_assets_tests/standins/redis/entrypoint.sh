#!/bin/sh
# The official redis image builds Redis with protected mode off by default; Debian's is on (it then
# refuses other hosts without a password), so it is turned off here, before the command's own options.
set -eu
if [ "${1:-}" = redis-server ]; then
  shift
  exec redis-server --protected-mode no "$@"
fi
exec "$@"
