#!/usr/bin/env bash
# Makes sure the services celeriac needs are up on loopback, starting only
# the ones named:
#   scripts/ensure-services.sh rabbitmq            # what the quickstart needs
#   scripts/ensure-services.sh                     # everything the test suite needs (= all)
# Names: rabbitmq (5672), postgres (5432), mariadb (3306), tls-tools (the
# programs worker/tests/tls.rs runs), all. Idempotent: a service that
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

[ $# = 0 ] && set -- all
status=0
for name in "$@"; do
  case "$name" in
    rabbitmq) rabbitmq || status=1 ;;
    postgres | postgresql) postgres || status=1 ;;
    mariadb | mysql) mariadb || status=1 ;;
    tls-tools) tls_tools || status=1 ;;
    all)
      rabbitmq || status=1
      postgres || status=1
      mariadb || status=1
      tls_tools || status=1
      ;;
    *)
      missing "unknown service \"$name\" (rabbitmq, postgres, mariadb, tls-tools, all)"
      exit 2
      ;;
  esac
done
exit $status
