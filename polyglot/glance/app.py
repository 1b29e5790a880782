"""Glance (OpenStack Image service), written in Python: stop glance-api on
every controller (the schema changes), install the new release on each,
`glance-manage db sync` once, start them all, check they run."""

from typing import List

import uphost
from uphost import fail, mutating, read_only, run
from wit_world.imports.types import Context, Node, PluginInfo, Rollout_Parallel

UNIT = "glance-api"


class Plugin(uphost.Hooks):
    def describe(self) -> PluginInfo:
        return PluginInfo(
            name="glance",
            version="0.1.0",
            description="Glance image service (Python): stop, install, db sync, start",
            depends_on=["galera", "keystone"],
            capabilities=[
                mutating("systemctl", ["stop|start", UNIT], "stop for the schema change, start after"),
                read_only("systemctl", ["is-active", UNIT], "is glance-api running?"),
                mutating("apt-get", ["install", "-y", "glance-api=*"], "install the new release"),
                mutating("glance-manage", ["db", "sync"], "schema migration"),
            ],
            rollout=Rollout_Parallel(),
            reversible=False,
            releases=None,
            node_guard=False,
            probes=[],
            ok_to_stop=False,
            reboots=False,
        )

    def check(self, ctx: Context) -> None:
        for n in uphost.nodes(ctx):
            run(n.name, "systemctl", "is-active", UNIT)

    def pre_upgrade(self, ctx: Context) -> None:
        for n in uphost.nodes(ctx):
            run(n.name, "systemctl", "stop", UNIT)
        uphost.progress("service-down")

    def upgrade(self, ctx: Context, node: Node) -> None:
        run(node.name, "apt-get", "install", "-y", f"glance-api={ctx.to_version}")

    def post_upgrade(self, ctx: Context) -> None:
        nodes = uphost.nodes(ctx)
        if not nodes:
            fail("glance has no nodes")
        run(nodes[0].name, "glance-manage", "db", "sync")
        for n in nodes:
            run(n.name, "systemctl", "start", UNIT)
        uphost.info(f"glance {ctx.to_version} running on {len(nodes)} node(s)")
        uphost.progress("service-up")
