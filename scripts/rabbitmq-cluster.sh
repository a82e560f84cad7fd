#!/usr/bin/env bash
# A local 3-node RabbitMQ cluster for tests and demos, started from the
# installed rabbitmq-server; it never touches the node on 5672.
#
#   scripts/rabbitmq-cluster.sh start  [--base DIR] [--port P] [--name PREFIX]
#   scripts/rabbitmq-cluster.sh stop   [--base DIR]
#   scripts/rabbitmq-cluster.sh status [--base DIR]
#
# Nodes PREFIX-1@localhost .. PREFIX-3@localhost (default celeriac-1..3),
# AMQP on 127.0.0.1:P, P+1, P+2 (default 5681-5683), Erlang distribution on
# P+20000.. (25681-25683), pause_minority, at-least-once dead-lettering that
# re-sends an unconfirmed message after 5 s (see write_files), no plugins (no management or Prometheus port; set
# CELERIAC_CLUSTER_MANAGEMENT=1 for the management UI on P+10000..). Each
# node's data, logs, config and pid file live in DIR/PREFIX-N (default DIR:
# $CELERIAC_CLUSTER_BASE or ${TMPDIR:-/tmp}/celeriac-cluster). The nodes use
# the Erlang cookie of the user rabbitmq-server runs as, like the shared node.
# CELERIAC_CLUSTER_BIND sets the AMQP listeners' address (default 127.0.0.1;
# any other address also lets guest log in from it).
#
# start: starts the nodes that are not running and, on a fresh DIR, joins
#   nodes 2 and 3 to node 1 (rabbitmqctl join_cluster). Idempotent: with all
#   three running it changes nothing; after a node was killed it starts that
#   node again and it rejoins by itself. --port and --name are remembered in
#   DIR/cluster.env, so later calls only need --base.
# stop: stops every running node (a stopped cluster: nothing to do).
# status: one line per node; exit 0 when all three run, 3 otherwise.
# Override the programs with RABBITMQ_SERVER and RABBITMQCTL.
set -uo pipefail

say() { echo "rabbitmq-cluster: $*"; }
fail() {
  echo "rabbitmq-cluster: $*" >&2
  exit 1
}

SERVER=${RABBITMQ_SERVER:-rabbitmq-server}
CTL=${RABBITMQCTL:-rabbitmqctl}
NODES=(1 2 3)

usage() {
  echo "usage: $0 start|stop|status [--base DIR] [--port P] [--name PREFIX]" >&2
  exit 2
}

[ $# -ge 1 ] || usage
action=$1
shift
base=${CELERIAC_CLUSTER_BASE:-${TMPDIR:-/tmp}/celeriac-cluster}
port=
name=
while [ $# -gt 0 ]; do
  case "$1" in
    --base) base=${2:?--base needs a directory}; shift 2 ;;
    --port) port=${2:?--port needs a number}; shift 2 ;;
    --name) name=${2:?--name needs a prefix}; shift 2 ;;
    *) usage ;;
  esac
done
case "$action" in start | stop | status) ;; *) usage ;; esac
# rabbitmq-server changes directory: paths must be absolute.
base=$(realpath -m "$base")

# What an earlier start recorded wins over the defaults, not over flags.
if [ -f "$base/cluster.env" ]; then
  # shellcheck disable=SC1091
  . "$base/cluster.env"
  if [ -n "$port" ] && [ "$port" != "$CLUSTER_PORT" ]; then
    fail "$base was started with --port $CLUSTER_PORT; stop it and remove $base to change it"
  fi
  if [ -n "$name" ] && [ "$name" != "$CLUSTER_NAME" ]; then
    fail "$base was started with --name $CLUSTER_NAME; stop it and remove $base to change it"
  fi
  port=$CLUSTER_PORT
  name=$CLUSTER_NAME
fi
port=${port:-5681}
name=${name:-celeriac}
case "$port" in *[!0-9]*) fail "--port must be a number, not \"$port\"" ;; esac
if [ "$port" -le 5672 ] && [ "$((port + 2))" -ge 5672 ]; then
  fail "ports $port-$((port + 2)) include 5672, the shared node's"
fi
if [ "$((port + 20002))" -gt 65535 ]; then
  fail "--port $port is too high: the distribution ports are --port + 20000"
fi
bind=${CELERIAC_CLUSTER_BIND:-127.0.0.1}

node() { echo "$name-$1@localhost"; }
dir() { echo "$base/$name-$1"; }
amqp_port() { echo $((port + $1 - 1)); }

ctl() { # node-number args...
  local n=$1
  shift
  "$CTL" -n "$(node "$n")" "$@"
}

running() { ctl "$1" ping -t 5 >/dev/null 2>&1; }

# The nodes run as the user rabbitmq-server switches to (Debian's wrapper
# runs them as `rabbitmq` when called by root); they must own their dirs.
owner() {
  if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1 && [ "$SERVER" = rabbitmq-server ]; then
    chown -R rabbitmq: "$@"
  fi
}

write_files() { # node-number
  local d amqp
  d=$(dir "$1")
  amqp=$(amqp_port "$1")
  mkdir -p "$d/mnesia" "$d/log"
  {
    echo "listeners.tcp.1 = $bind:$amqp"
    [ "$bind" = 127.0.0.1 ] || echo "loopback_users = none"
    echo "cluster_partition_handling = pause_minority"
    if [ "${CELERIAC_CLUSTER_MANAGEMENT:-0}" = 1 ]; then
      echo "management.tcp.ip = 127.0.0.1"
      echo "management.tcp.port = $((amqp + 10000))"
    fi
  } >"$d/rabbitmq.conf"
  # A quorum queue hands a message on (at-least-once dead-lettering) and
  # waits for the next queue's confirm; a confirm lost with a node is only
  # noticed after this long (RabbitMQ's default: minutes), then the message
  # is sent again. docs/scaling.md#delayed-tasks-across-a-node-loss
  echo "[{rabbit, [{dead_letter_worker_publisher_confirm_timeout, 5000}]}]." >"$d/advanced.config"
  if [ "${CELERIAC_CLUSTER_MANAGEMENT:-0}" = 1 ]; then
    echo "[rabbitmq_management]." >"$d/enabled_plugins"
  else
    echo "[]." >"$d/enabled_plugins"
  fi
}

launch() { # node-number
  local d amqp
  d=$(dir "$1")
  amqp=$(amqp_port "$1")
  rm -f "$d/pid" # a killed node leaves it behind
  say "starting $(node "$1") on $bind:$amqp"
  env RABBITMQ_NODENAME="$(node "$1")" \
    RABBITMQ_NODE_IP_ADDRESS="$bind" \
    RABBITMQ_NODE_PORT="$amqp" \
    RABBITMQ_DIST_PORT=$((amqp + 20000)) \
    RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$d/mnesia" \
    RABBITMQ_LOG_BASE="$d/log" \
    RABBITMQ_PID_FILE="$d/pid" \
    "$SERVER" -detached >>"$d/log/startup.log" 2>&1
}

await() { # node-number
  # `wait` waits for the pid file, then for the node to boot (await_startup
  # gives up at once on a node that has not registered yet).
  if ! timeout 130 "$CTL" -n "$(node "$1")" wait "$(dir "$1")/pid" -t 120 >/dev/null 2>&1; then
    fail "$(node "$1") did not start within 120 s; see $(dir "$1")/log"
  fi
}

members() { # node-number [key]: the nodes it sees in its cluster (running ones by default)
  ctl "$1" cluster_status --formatter json 2>/dev/null |
    grep -o "\"${2:-running_nodes}\":\[[^]]*\]" || true
}

start() {
  mkdir -p "$base"
  printf 'CLUSTER_PORT=%s\nCLUSTER_NAME=%s\n' "$port" "$name" >"$base/cluster.env"
  local n started=()
  for n in "${NODES[@]}"; do
    if running "$n"; then
      say "$(node "$n") is running"
      continue
    fi
    write_files "$n"
    started+=("$n")
  done
  owner "$base"
  # Together: a node that was in the cluster waits at boot for its peers.
  for n in "${started[@]}"; do launch "$n" || fail "rabbitmq-server failed; see $(dir "$n")/log"; done
  for n in "${started[@]}"; do await "$n"; done
  for n in 2 3; do
    # A member (running or not) rejoins by itself when it boots.
    if members "$n" disk_nodes | grep -q "\"$(node 1)\""; then continue; fi
    say "joining $(node "$n") to $(node 1)"
    ctl "$n" stop_app >/dev/null || fail "stop_app on $(node "$n") failed"
    ctl "$n" join_cluster "$(node 1)" >/dev/null || fail "join_cluster $(node "$n") -> $(node 1) failed"
    ctl "$n" start_app >/dev/null || fail "start_app on $(node "$n") failed"
    await "$n"
  done
  [ ${#started[@]} = 0 ] || status
}

stop() {
  local n any=0
  for n in "${NODES[@]}"; do
    if running "$n"; then
      say "stopping $(node "$n")"
      ctl "$n" stop >/dev/null 2>&1 &
      any=1
    fi
  done
  wait
  [ $any = 0 ] && say "no node of $base is running"
  return 0
}

status() {
  local n up=0
  for n in "${NODES[@]}"; do
    if running "$n"; then
      up=$((up + 1))
      say "$(node "$n") running, amqp://guest:guest@$bind:$(amqp_port "$n")/ $(members "$n")"
    else
      say "$(node "$n") stopped (port $(amqp_port "$n"))"
    fi
  done
  [ $up = 3 ]
}

case "$action" in
  start) start ;;
  stop) stop ;;
  status) status || exit 3 ;;
esac
