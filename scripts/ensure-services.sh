#!/usr/bin/env bash
# Makes sure the services celeriac's tests use are up on loopback: RabbitMQ
# (5672), PostgreSQL (5432) and MariaDB/MySQL (3306). Idempotent: a service
# that answers is left alone; one that does not is started and waited for.
# Override the commands with RABBITMQ_START, POSTGRES_START, MARIADB_START.
set -uo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 5; i++)); do
    up "$2" && return 0
    sleep 0.2
  done
  echo "ensure-services: $1 did not come up on 127.0.0.1:$2 within $3 s" >&2
  return 1
}

ensure() { # name port start-command
  if up "$2"; then
    echo "ensure-services: $1 is up on 127.0.0.1:$2"
    return 0
  fi
  echo "ensure-services: starting $1: $3"
  bash -c "$3" >/dev/null 2>&1 || true
  wait_port "$1" "$2" 60 && echo "ensure-services: $1 is up on 127.0.0.1:$2"
}

status=0
ensure RabbitMQ 5672 "${RABBITMQ_START:-rabbitmq-server -detached}" || status=1
if command -v rabbitmqctl >/dev/null; then
  # The port opens before the node is fully booted; wait for the app too.
  timeout 60 rabbitmqctl await_startup >/dev/null 2>&1 || { rabbitmqctl start_app >/dev/null 2>&1 || true; }
fi
ensure PostgreSQL 5432 "${POSTGRES_START:-pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start}" || status=1
ensure MariaDB 3306 "${MARIADB_START:-start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd}" || status=1
# worker/tests/tls.rs starts a TLS listener on the running RabbitMQ node and
# private PostgreSQL and MariaDB servers (as root, for the servers' users).
for tool in rabbitmqctl setpriv /usr/lib/postgresql/15/bin/initdb /usr/lib/postgresql/15/bin/postgres \
  mariadb-install-db mariadbd mariadb; do
  if ! command -v "$tool" >/dev/null && [ ! -x "$tool" ]; then
    echo "ensure-services: $tool not found; the TLS tests (worker/tests/tls.rs) need it" >&2
    status=1
  fi
done
exit $status
