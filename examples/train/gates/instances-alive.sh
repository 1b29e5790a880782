#!/bin/sh
# Gate between hops: the instances created before the upgrade are all still
# there (the simulated cluster keeps them in nodes/cluster.json). A real
# deployment runs `openstack server list` or a Tempest/Rally smoke test here.
set -eu
cluster=nodes/cluster.json
for vm in vm-1 vm-2 vm-3 vm-4 vm-5; do
    if ! grep -q "\"$vm\"" "$cluster"; then
        echo "instance $vm is gone after hop ${UPHOST_HOP:-?} of ${UPHOST_HOPS:-?}" >&2
        exit 1
    fi
done
echo "5 instances alive after hop ${UPHOST_HOP:-?} of ${UPHOST_HOPS:-?}"
