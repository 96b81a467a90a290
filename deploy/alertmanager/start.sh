#!/bin/sh
# Entry point of the compose `alertmanager` service (the public image and the Debian
# stand-in alike): write the config with the values of the ALERT_* variables in place of
# their ${...} references, then run Alertmanager on it (Alertmanager reads no environment
# variables in its config). `start.sh render` prints the config and exits.
set -eu
template=${ALERTMANAGER_TEMPLATE:-/etc/alertmanager/alertmanager.yml}
out=${ALERTMANAGER_RENDERED:-/tmp/alertmanager.yml}
if [ -z "${ALERT_WEBHOOK_URL:-}" ]; then
  echo "alertmanager: ALERT_WEBHOOK_URL is not set in .env: alerts reach no one" >&2
  ALERT_WEBHOOK_URL=http://alert-receiver.invalid/
  export ALERT_WEBHOOK_URL
fi
cp "$template" "$out"
for name in $(env | sed -n 's/^\(ALERT_[A-Z0-9_]*\)=.*/\1/p'); do
  value=$(printenv "$name" | sed 's/[\\&|]/\\&/g')
  sed -i "s|\${$name}|$value|g" "$out"
done
if grep -q '\${ALERT_[A-Z0-9_]*}' "$out"; then
  echo "alertmanager: $template uses variables that are not set:" \
    "$(grep -o '\${ALERT_[A-Z0-9_]*}' "$out" | sort -u | tr '\n' ' ')" >&2
  exit 2
fi
if [ "${1:-}" = render ]; then
  cat "$out"
  exit 0
fi
bin=$(command -v alertmanager || command -v prometheus-alertmanager)
# One instance: no cluster gossip.
exec "$bin" --config.file="$out" --storage.path=/alertmanager --cluster.listen-address= "$@"
