#!/bin/sh
# Render deploy/redis/users.acl with passwords from the environment, then exec the command
# given (the Redis container's entrypoint in deploy/compose.acl.yaml):
#
#   REDIS_PASSWORD_<USER>   the user's name upper-cased with '-' as '_', for example
#                           REDIS_PASSWORD_WORKER_CLAUDE; only its SHA-256 reaches the file
#   SWARM_NAMESPACE         replaces the `swarm:` prefix of every key pattern (default swarm)
#   SWARM_ACL_TEMPLATE      the template (default /usr/local/etc/redis/users.acl)
#   SWARM_ACL_FILE          where to write (default /tmp/swarm-users.acl)
#   SWARM_ACL_EXTRA         rules added to every user but `default`, e.g. "+client|setinfo"
#                           on Redis 7.2+ (redis-py sends it on connect; older servers do
#                           not know the subcommand, so the committed file leaves it out)
#
# A user whose variable is unset or empty stays `off`: it cannot log in.
set -eu

template="${SWARM_ACL_TEMPLATE:-/usr/local/etc/redis/users.acl}"
out="${SWARM_ACL_FILE:-/tmp/swarm-users.acl}"
ns="${SWARM_NAMESPACE:-swarm}"
extra="${SWARM_ACL_EXTRA:-}"
case "$ns" in
  '' | *[!A-Za-z0-9_.{}-]*)
    echo "render-acl: SWARM_NAMESPACE '$ns' must be letters, digits, '_', '.', '-' or braces" >&2
    exit 2
    ;;
esac

umask 077
tmp="$out.tmp"
: > "$tmp"
enabled=0
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in
    "user "*) ;;
    *) continue ;;
  esac
  name=$(printf '%s\n' "$line" | cut -d ' ' -f 2)
  var="REDIS_PASSWORD_$(printf '%s' "$name" | tr 'a-z-' 'A-Z_')"
  eval "pass=\${$var:-}"
  line=$(printf '%s\n' "$line" | sed "s/~swarm:/~$ns:/g")
  if [ -n "$extra" ] && [ "$name" != default ]; then
    line="$line $extra"
  fi
  if [ -n "$pass" ]; then
    hash=$(printf '%s' "$pass" | sha256sum | cut -d ' ' -f 1)
    line="$line on #$hash"
    enabled=$((enabled + 1))
  fi
  printf '%s\n' "$line" >> "$tmp"
done < "$template"
mv "$tmp" "$out"
# The official image starts redis-server as the `redis` user; let it read the file.
if id redis >/dev/null 2>&1; then
  chown redis "$out" 2>/dev/null || true
fi
echo "render-acl: $out written, $enabled user(s) enabled, namespace '$ns'" >&2

if [ "$#" -gt 0 ]; then
  exec "$@"
fi
