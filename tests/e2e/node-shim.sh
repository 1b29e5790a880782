#!/bin/sh
# What a real controller node has and a directory on one machine does not:
# a service manager, a filesystem root of its own, and client configuration
# in /etc. Every node of the real-services test (tests/services.rs) has
# `bin/<program>` symlinks to this script, first on the PATH that uphost's
# local transport gives it (`uphost_node_root`).
#
# * systemctl: start/stop/restart/is-active/set-environment of the node's
#   real mariadbd (Galera), haproxy and rabbitmq-server processes, waiting
#   for readiness as systemd's units do. `keystone` is the one simulated
#   unit (a flag file): keystone itself is not installed by the test.
# * mysql, mysqldump, galera_recovery, rabbitmqctl: the real programs with
#   this node's configuration (--defaults-file, -n NODE).
# * touch, rm, sed, haproxy: the real programs, paths under /etc and /var
#   mapped under the node's root (so /var/lib/mysql/grastate.dat is this
#   node's file).
# * galera_new_cluster is not shimmed: the real script runs; its
#   `systemctl set-environment` (MariaDB <= 10.11.14) or the unit's
#   EnvironmentFile it writes (/run/mariadb-wsrep-new-cluster, later), and
#   its `systemctl restart`, come here.
# * apt-get install: records the package version in the node's root (no
#   second MariaDB/HAProxy/RabbitMQ version is installable here).
# * openstack, keystone-manage: the stand-in for keystone; db_sync is where
#   the test injects a failure (a real, destructive SQL migration that then
#   fails), when $E2E_ROOT/inject-db-sync-failure exists; if that file says
#   `crash-galera`, every mariadbd is SIGKILLed too.
set -u
R="${UPHOST_NODE_ROOT:?UPHOST_NODE_ROOT is not set: run through a node of the e2e inventory}"
. "$R/node.env"
prog=$(basename "$0")
# What this script and the daemons it starts run is the real thing: never
# a shim again (the node's bin/ is first on the PATH it was given).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

run_mapped() {
    real="$1"
    shift
    # Append the mapped arguments, then drop the originals. A node's own
    # files are its /etc and /var; /run is the machine's (galera_new_cluster
    # writes the unit's EnvironmentFile there and removes it with `rm`).
    n=$#
    for a in "$@"; do
        case "$a" in
            /etc/* | /var/*) set -- "$@" "$R$a" ;;
            *) set -- "$@" "$a" ;;
        esac
    done
    shift "$n"
    exec "$real" "$@"
}

rabbit_env() {
    export HOME="$E2E_ROOT/rabbitmq-home"
    export RABBITMQ_NODENAME="$RABBIT_NODE"
    export RABBITMQ_NODE_IP_ADDRESS="$NODE_ADDR"
    export RABBITMQ_DIST_PORT="$RABBIT_DIST_PORT"
    export RABBITMQ_MNESIA_BASE="$R/var/lib/rabbitmq/mnesia"
    export RABBITMQ_LOG_BASE="$R/var/log/rabbitmq"
    export RABBITMQ_CONFIG_FILE="$R/etc/rabbitmq/rabbitmq"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$R/etc/rabbitmq/enabled_plugins"
    export RABBITMQ_PID_FILE="$R/run/rabbitmq.pid"
}

pid_alive() {
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop_pid() {
    # TERM the process in pid file $1 and wait up to $2 seconds for it.
    [ -f "$1" ] || return 0
    pid=$(cat "$1")
    kill -TERM "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
    i=0
    while kill -0 "$pid" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -gt $(($2 * 10)) ]; then
            echo "$prog: $pid did not stop within $2 s" >&2
            return 1
        fi
        sleep 0.1
    done
    rm -f "$1"
}

mariadb_start() {
    if pid_alive "$R/run/mysqld.pid"; then return 0; fi
    # The unit's environment: galera_new_cluster sets _WSREP_NEW_CLUSTER
    # with `systemctl set-environment` (MariaDB <= 10.11.14) or in the
    # unit's EnvironmentFile /run/mariadb-wsrep-new-cluster (later), for
    # the duration of its own `systemctl restart`.
    _WSREP_NEW_CLUSTER=""
    [ -f "$R/run/systemd.env" ] && . "$R/run/systemd.env"
    [ -f /run/mariadb-wsrep-new-cluster ] && . /run/mariadb-wsrep-new-cluster
    extra="${_WSREP_NEW_CLUSTER:-}"
    # shellcheck disable=SC2086 # $extra is one option or nothing
    setsid /usr/sbin/mariadbd --defaults-file="$R/etc/mysql/my.cnf" $extra \
        </dev/null >>"$R/var/log/mariadbd.out" 2>&1 &
    pid=$!
    # Type=notify: ready once it accepts queries with wsrep ready.
    i=0
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "mariadb.service: mariadbd exited during start-up; last lines of the error log:" >&2
            tail -n 15 "$R/var/log/mysql.err" >&2
            return 1
        fi
        ready=$(/usr/bin/mysql --no-defaults --socket="$R/run/mysqld.sock" --user=root -N -B \
            -e "SHOW STATUS LIKE 'wsrep_ready'" 2>/dev/null | cut -f2)
        [ "$ready" = "ON" ] && return 0
        i=$((i + 1))
        if [ "$i" -gt 1800 ]; then
            echo "mariadb.service: not ready within 180 s" >&2
            return 1
        fi
        sleep 0.1
    done
}

haproxy_start() {
    if pid_alive "$R/run/haproxy.pid"; then return 0; fi
    /usr/sbin/haproxy -D -p "$R/run/haproxy.pid" -f "$R/etc/haproxy/haproxy.cfg"
}

rabbitmq_start() {
    rabbit_env
    if pid_alive "$RABBITMQ_PID_FILE"; then return 0; fi
    setsid /usr/lib/rabbitmq/bin/rabbitmq-server </dev/null \
        >>"$R/var/log/rabbitmq-server.out" 2>&1 &
    /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$RABBIT_NODE" wait "$RABBITMQ_PID_FILE" --timeout 120 >/dev/null
}

rabbitmq_stop() {
    rabbit_env
    pid_alive "$RABBITMQ_PID_FILE" || return 0
    /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$RABBIT_NODE" stop "$RABBITMQ_PID_FILE" >/dev/null
}

unit_action() {
    action="$1"
    unit="${2%.service}"
    case "$unit:$action" in
        mariadb:start | mysql:start) mariadb_start ;;
        mariadb:stop | mysql:stop) stop_pid "$R/run/mysqld.pid" 120 ;;
        mariadb:restart | mysql:restart) stop_pid "$R/run/mysqld.pid" 120 && mariadb_start ;;
        mariadb:is-active | mysql:is-active) pid_alive "$R/run/mysqld.pid" ;;
        haproxy:start) haproxy_start ;;
        haproxy:stop) stop_pid "$R/run/haproxy.pid" 30 ;;
        haproxy:restart) stop_pid "$R/run/haproxy.pid" 30 && haproxy_start ;;
        haproxy:is-active) pid_alive "$R/run/haproxy.pid" ;;
        rabbitmq-server:start) rabbitmq_start ;;
        rabbitmq-server:stop) rabbitmq_stop ;;
        rabbitmq-server:restart) rabbitmq_stop && rabbitmq_start ;;
        rabbitmq-server:is-active) rabbit_env && pid_alive "$RABBITMQ_PID_FILE" ;;
        keystone:start | keystone:restart) touch "$R/run/keystone.active" ;;
        keystone:stop) rm -f "$R/run/keystone.active" ;;
        keystone:is-active) [ -f "$R/run/keystone.active" ] ;;
        *)
            echo "systemctl: Unit $2.service not found." >&2
            return 5
            ;;
    esac
}

case "$prog" in
    systemctl)
        case "${1:-}" in
            set-environment)
                shift
                : >"$R/run/systemd.env.new"
                [ -f "$R/run/systemd.env" ] && cat "$R/run/systemd.env" >"$R/run/systemd.env.new"
                for kv in "$@"; do
                    printf "%s='%s'\n" "${kv%%=*}" "${kv#*=}" >>"$R/run/systemd.env.new"
                done
                mv "$R/run/systemd.env.new" "$R/run/systemd.env"
                ;;
            start | stop | restart)
                unit_action "$1" "${2:?systemctl $1: no unit}"
                ;;
            is-active)
                if unit_action is-active "${2:?systemctl is-active: no unit}"; then
                    echo active
                else
                    echo inactive
                    exit 3
                fi
                ;;
            *)
                echo "systemctl (e2e node): unsupported: $*" >&2
                exit 1
                ;;
        esac
        ;;
    mysql | mysqldump)
        exec "/usr/bin/$prog" --defaults-file="$R/etc/mysql/my.cnf" "$@"
        ;;
    galera_recovery)
        exec /usr/bin/galera_recovery --defaults-file="$R/etc/mysql/my.cnf" "$@"
        ;;
    rabbitmqctl)
        rabbit_env
        exec /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RABBIT_NODE" "$@"
        ;;
    touch) run_mapped /usr/bin/touch "$@" ;;
    sed) run_mapped /bin/sed "$@" ;;
    rm) run_mapped /bin/rm "$@" ;;
    haproxy) run_mapped /usr/sbin/haproxy "$@" ;;
    apt-get)
        [ "${1:-}" = install ] || { echo "apt-get (e2e node): only install" >&2; exit 100; }
        shift
        for p in "$@"; do
            case "$p" in
                -*) ;;
                *=*)
                    mkdir -p "$R/var/lib/packages"
                    echo "${p#*=}" >"$R/var/lib/packages/${p%%=*}"
                    echo "Setting up ${p%%=*} (${p#*=}) ..."
                    ;;
                *) echo "E: no version given for $p" >&2; exit 100 ;;
            esac
        done
        ;;
    openstack)
        echo "http://$NODE_ADDR:5000/v3"
        ;;
    keystone-manage)
        if [ -f "$E2E_ROOT/inject-db-sync-failure" ]; then
            # A migration that changes rows and then dies half-way.
            /usr/bin/mysql --defaults-file="$R/etc/mysql/my.cnf" -e \
                "DELETE FROM shop.orders WHERE customer_id % 3 = 0; UPDATE shop.customers SET balance = 0 WHERE id % 2 = 0; DROP TABLE shop.audit;" || exit 1
            /usr/bin/mysql --defaults-file="$R/etc/mysql/my.cnf" -N -B -e \
                "CHECKSUM TABLE shop.customers, shop.orders EXTENDED" >"$E2E_ROOT/after-bad-migration.txt"
            if grep -q crash-galera "$E2E_ROOT/inject-db-sync-failure"; then
                # ... and the database cluster goes down with it, every
                # node at once (SIGKILL: no clean shutdown, no node marked
                # safe to bootstrap).
                for pidfile in "$E2E_ROOT"/nodes/*/run/mysqld.pid; do
                    pid=$(cat "$pidfile")
                    kill -KILL "$pid"
                    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
                done
                echo "ERROR 2013 (HY000): Lost connection to server during query" >&2
            fi
            echo "CRITICAL keystone [-] Unhandled error: sqlalchemy.exc.OperationalError: (pymysql.err.OperationalError) (1213, 'Deadlock found when trying to get lock') [SQL: ALTER TABLE project ADD COLUMN options TEXT]" >&2
            exit 1
        fi
        echo "keystone-manage db_sync: schema at head"
        ;;
    *)
        echo "node-shim: no shim for $prog" >&2
        exit 127
        ;;
esac
