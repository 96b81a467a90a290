#!/bin/sh
# Render deploy/redis/users.acl with passwords from the environment, then exec the command
# given (the Redis container's entrypoint in compose.yaml):
#
#   REDIS_PASSWORD_<USER>   the user's name upper-cased with '-' as '_', for example
#                           REDIS_PASSWORD_WORKER_CLAUDE; only its SHA-256 reaches the file
#   SWARM_NAMESPACE         replaces the `swarm:` prefix of every key pattern (default swarm)
#   SWARM_ACL_TEMPLATE      the template (default /usr/local/etc/redis/users.acl)
#   SWARM_ACL_FILE          where to write (default /tmp/swarm-users.acl)
#   SWARM_ACL_EXTRA         rules added to every user but `default`; unset: "+client|setinfo"
#                           where redis-server is 7.2+ (redis-py sends it on connect; older
#                           servers do not know the subcommand, so the committed file and
#                           this default leave it out there)
#   SWARM_ACL_DEFAULT_ADMIN 1: the `default` user becomes a second swarm-admin (its rules and
#                           REDIS_PASSWORD_SWARM_ADMIN), so `redis-cli` inside the container
#                           logs in through REDISCLI_AUTH alone (compose.yaml sets both)
#   SWARM_ACL_DEV_PASSWORD  the stand-in compose.yaml passes for a password .env lacks: any
#                           user given it makes this script refuse, naming the variables,
#                           unless SWARM_REDIS_DEV_PASSWORDS=1 says this is a development
#                           Redis whose users may share that public password
#
# A user whose variable is unset or empty stays `off`: it cannot log in.
set -eu

template="${SWARM_ACL_TEMPLATE:-/usr/local/etc/redis/users.acl}"
out="${SWARM_ACL_FILE:-/tmp/swarm-users.acl}"
ns="${SWARM_NAMESPACE:-swarm}"
if [ -z "${SWARM_ACL_EXTRA+set}" ]; then
  version=$(redis-server --version 2>/dev/null | sed -n 's/.* v=\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  SWARM_ACL_EXTRA=$(echo "${version:-0 0}" | awk '{ if ($1 > 7 || ($1 == 7 && $2 >= 2)) print "+client|setinfo" }')
fi
extra="$SWARM_ACL_EXTRA"
dev="${SWARM_ACL_DEV_PASSWORD:-}"
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
stand_ins=""
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in
    "user "*) ;;
    *) continue ;;
  esac
  name=$(printf '%s\n' "$line" | cut -d ' ' -f 2)
  if [ "$name" = default ] && [ "${SWARM_ACL_DEFAULT_ADMIN:-}" = 1 ]; then
    line="user default off resetpass resetkeys resetchannels ~* &* +@all"
    var=REDIS_PASSWORD_SWARM_ADMIN
  else
    var="REDIS_PASSWORD_$(printf '%s' "$name" | tr 'a-z-' 'A-Z_')"
  fi
  eval "pass=\${$var:-}"
  if [ -n "$dev" ] && [ "$pass" = "$dev" ] && [ "$name" != default ]; then
    stand_ins="$stand_ins $var"
  fi
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
if [ -n "$stand_ins" ]; then
  if [ "${SWARM_REDIS_DEV_PASSWORDS:-}" != 1 ]; then
    rm -f "$tmp"
    echo "render-acl: refusing to start: .env sets no password for$stand_ins." >&2
    echo "render-acl: run \`swarm init\` to write every missing one into .env, or set" >&2
    echo "render-acl: SWARM_REDIS_DEV_PASSWORDS=1 there for a development Redis whose users" >&2
    echo "render-acl: share the public password '$dev' (never where others can reach it)" >&2
    exit 3
  fi
  echo "render-acl: WARNING: development Redis: the public password '$dev' for$stand_ins" >&2
fi
mv "$tmp" "$out"
# The official image starts redis-server as the `redis` user; let it read the file.
if id redis >/dev/null 2>&1; then
  chown redis "$out" 2>/dev/null || true
fi
echo "render-acl: $out written, $enabled user(s) enabled, namespace '$ns'" >&2

if [ "$#" -gt 0 ]; then
  exec "$@"
fi
