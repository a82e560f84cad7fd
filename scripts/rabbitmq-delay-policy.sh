#!/usr/bin/env bash
# Makes celeriac's delay queues "lazy" on a RabbitMQ older than 3.12, with a
# policy: their messages go to disk at once instead of being held in memory.
# Classic queues of 3.10 and 3.11 otherwise keep every waiting message in
# memory; with a million delayed tasks the broker grew to 4 GB and the tasks
# started seconds late (docs/scheduling.md, "Many delayed tasks"). From 3.12
# on classic queues behave this way by themselves, and this does nothing.
#
#   scripts/rabbitmq-delay-policy.sh                       # delay_prefix celeriac.delay, vhost /
#   scripts/rabbitmq-delay-policy.sh --prefix myapp.delay --vhost prod
#   scripts/rabbitmq-delay-policy.sh --pattern '\.delay\.[0-7]\.[1-9a-f]$'
#
# Runs rabbitmqctl (on the broker's host; RABBITMQCTL overrides the command).
# Idempotent. A policy replaces any lower-priority policy on the same queues:
# if one of yours already matches the delay queues, add "queue-mode": "lazy"
# to it instead of running this.
set -euo pipefail

prefix="celeriac.delay"
pattern=""
vhost="/"
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --pattern) pattern="$2"; shift 2 ;;
    --vhost) vhost="$2"; shift 2 ;;
    *) echo "rabbitmq-delay-policy: unknown argument $1 (--prefix P, --pattern RE, --vhost V)" >&2; exit 2 ;;
  esac
done
ctl=(${RABBITMQCTL:-rabbitmqctl})

version=$("${ctl[@]}" version 2>/dev/null) || {
  echo "rabbitmq-delay-policy: cannot run ${ctl[*]} version (is RabbitMQ running here?)" >&2
  exit 1
}
IFS=. read -r major minor _ <<<"$version"
if [ "${major:-0}" -gt 3 ] || { [ "${major:-0}" = 3 ] && [ "${minor:-0}" -ge 12 ]; }; then
  echo "rabbitmq-delay-policy: RabbitMQ $version keeps classic queues on disk already; nothing to do"
  exit 0
fi
if [ -n "$pattern" ]; then
  name="celeriac-delay-lazy-pattern"
else
  # The delay queues are <prefix>.<level 0-7>.<digit 1-f> (common/src/delay.rs).
  pattern="^$(sed 's/[.[\*^$()+?{}|\\]/\\&/g' <<<"$prefix")\\.[0-7]\\.[1-9a-f]\$"
  name="celeriac-delay-lazy-$(tr -c 'A-Za-z0-9.\n-' '_' <<<"$prefix")"
fi
"${ctl[@]}" set_policy -p "$vhost" --apply-to queues --priority 1 \
  "$name" "$pattern" '{"queue-mode":"lazy"}' >/dev/null
echo "rabbitmq-delay-policy: RabbitMQ $version: policy $name makes queues matching $pattern (vhost $vhost) lazy"
