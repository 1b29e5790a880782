#!/bin/sh
# clustercheck, as TripleO and Percona ship it behind xinetd (here socat):
# HAProxy's httpchk on port 9200 gets 200 when this node is Synced and not
# drained, 503 otherwise. Draining = /var/tmp/clustercheck.disabled exists
# (under this node's root: see node-shim.sh).
R="$1"
if [ -f "$R/var/tmp/clustercheck.disabled" ]; then
    body="Galera cluster node is manually disabled."
    code="503 Service Unavailable"
else
    state=$(/usr/bin/mysql --defaults-file="$R/etc/mysql/my.cnf" -N -B \
        -e "SHOW STATUS LIKE 'wsrep_local_state'" 2>/dev/null | cut -f2)
    if [ "$state" = "4" ]; then
        body="Galera cluster node is synced."
        code="200 OK"
    else
        body="Galera cluster node is not synced."
        code="503 Service Unavailable"
    fi
fi
printf 'HTTP/1.1 %s\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s\r\n' \
    "$code" $((${#body} + 2)) "$body"
