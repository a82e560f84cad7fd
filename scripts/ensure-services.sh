#!/usr/bin/env bash
# Makes sure the services celeriac needs are up on loopback, starting only
# the ones named:
#   scripts/ensure-services.sh rabbitmq            # what the quickstart needs
#   scripts/ensure-services.sh                     # everything the test suite needs (= all)
# Names: rabbitmq (5672), postgres (5432), mariadb (3306), tls-tools (the
# programs worker/tests/tls.rs runs), chromium (Debian's chromium and
# chromedriver for the dashboard's browser tests, apt-get installed if
# missing), all; and cluster (a local 3-node RabbitMQ cluster on
# 5681-5683, scripts/rabbitmq-cluster.sh; not part of all: only the serial
# cluster test and demos need it, and that test starts its own).
# Idempotent: a service that
# answers is left alone; one that does not is started and waited for. A
# missing program is one line saying what is missing and what needs it.
# Exit code 0 when every named service is up, 1 otherwise.
# Override the start commands with RABBITMQ_START, POSTGRES_START, MARIADB_START.
set -uo pipefail

say() { echo "ensure-services: $*"; }
missing() { echo "ensure-services: $*" >&2; }

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 5; i++)); do
    up "$2" && return 0
    sleep 0.2
  done
  missing "$1 did not come up on 127.0.0.1:$2 within $3 s"
  return 1
}

have() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ]; }

ensure() { # name port program start-command needed-by
  if up "$2"; then
    say "$1 is up on 127.0.0.1:$2"
    return 0
  fi
  if [ -z "$6" ] && ! have "$3"; then
    missing "$1 is not running on 127.0.0.1:$2 and $3 is not installed; $5 need it (install $1, or start it yourself)"
    return 1
  fi
  say "starting $1: $4"
  bash -c "$4" >/dev/null 2>&1 || true
  wait_port "$1" "$2" 60 && say "$1 is up on 127.0.0.1:$2"
}

rabbitmq() {
  ensure RabbitMQ 5672 rabbitmq-server "${RABBITMQ_START:-rabbitmq-server -detached}" \
    "the quickstart and nearly every test" "${RABBITMQ_START:-}" || return 1
  if have rabbitmqctl; then
    # The port opens before the node is fully booted; wait for the app too.
    timeout 60 rabbitmqctl await_startup >/dev/null 2>&1 || { rabbitmqctl start_app >/dev/null 2>&1 || true; }
  fi
  # On RabbitMQ before 3.12, delay queues of the default delay_prefix keep
  # their messages on disk (a policy; see the script). Later versions: nothing.
  if have rabbitmqctl; then
    "$(dirname "$0")/rabbitmq-delay-policy.sh" 2>&1 | sed 's/^rabbitmq-delay-policy/ensure-services/'
  fi
  # The management API (15672): the dashboard's queue page and its tests
  # read queue depths and rates there. Enabled on the running node, no restart.
  if have rabbitmq-plugins && ! up 15672; then
    timeout 60 rabbitmq-plugins enable rabbitmq_management >/dev/null 2>&1 &&
      wait_port "RabbitMQ management" 15672 30 && say "RabbitMQ management API is up on 127.0.0.1:15672"
  fi
}

postgres() {
  ensure PostgreSQL 5432 pg_ctlcluster \
    "${POSTGRES_START:-pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start}" \
    "the PostgreSQL result-backend and beat tests" "${POSTGRES_START:-}"
}

mariadb() {
  ensure MariaDB 3306 /usr/sbin/mariadbd \
    "${MARIADB_START:-start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd}" \
    "the MySQL result-backend and beat tests" "${MARIADB_START:-}"
}

cluster() {
  if ! have rabbitmq-server; then
    missing "rabbitmq-server is not installed; the local cluster needs it"
    return 1
  fi
  "$(dirname "$0")/rabbitmq-cluster.sh" start
}

tls_tools() {
  # worker/tests/tls.rs starts a TLS listener on the running RabbitMQ node and
  # private PostgreSQL and MariaDB servers (as root, for the servers' users).
  local tool ok=0
  for tool in rabbitmqctl setpriv /usr/lib/postgresql/15/bin/initdb /usr/lib/postgresql/15/bin/postgres \
    mariadb-install-db mariadbd mariadb; do
    if ! have "$tool"; then
      missing "$tool not found; the TLS tests (worker/tests/tls.rs) need it"
      ok=1
    fi
  done
  [ $ok = 0 ] && say "the TLS tests' programs are installed"
  return $ok
}

chromium() {
  # dashboard/tests/browser.rs drives /usr/bin/chromium through /usr/bin/chromedriver.
  if have /usr/bin/chromium && have /usr/bin/chromedriver; then
    say "chromium and chromedriver are installed"
    return 0
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if ! have apt-get || { [ -n "$sudo" ] && ! have sudo; }; then
    missing "chromium and chromedriver are not installed (the dashboard's browser tests need them; Debian: apt-get install chromium chromium-driver)"
    return 1
  fi
  say "installing chromium and chromium-driver"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
    { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } ||
    { missing "apt-get could not install chromium chromium-driver"; return 1; }
  say "chromium and chromedriver are installed"
}

[ $# = 0 ] && set -- all
status=0
for name in "$@"; do
  case "$name" in
    rabbitmq) rabbitmq || status=1 ;;
    postgres | postgresql) postgres || status=1 ;;
    mariadb | mysql) mariadb || status=1 ;;
    tls-tools) tls_tools || status=1 ;;
    chromium) chromium || status=1 ;;
    cluster) cluster || status=1 ;;
    all)
      rabbitmq || status=1
      postgres || status=1
      mariadb || status=1
      tls_tools || status=1
      chromium || status=1
      ;;
    *)
      missing "unknown service \"$name\" (rabbitmq, postgres, mariadb, tls-tools, chromium, all, cluster)"
      exit 2
      ;;
  esac
done
exit $status
