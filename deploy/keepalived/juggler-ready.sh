#!/bin/sh
# keepalived's check of the local Juggler (vrrp_script juggler_ready): exit 0 while its
# admin listener's /ready answers 200, 1 on 503 (draining) or no answer (down).
# The admin address is `set admin` in routes.def (or --admin).
exec curl --silent --fail --max-time 1 --output /dev/null "http://${JUGGLER_ADMIN:-127.0.0.1:9090}/ready"
