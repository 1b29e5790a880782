"""A thin helper over the uphost:plugin@0.2 bindings that componentize-py
generates (`wit_world`): run a command, fail a hook, log, read parameters.
The plugin's class is named `Plugin` and implements every hook of
`wit_world.exports.Plugin`; `Hooks` gives the ones a plugin leaves alone."""

from typing import List, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log as _log
from wit_world.imports import node_exec, state
from wit_world.imports.types import Access, CommandCapability, Context, HookError, Node


def fail(message: str) -> None:
    """Fail the hook: the operator sees `message`."""
    raise Err(HookError(message))


def mutating(program: str, args: List[str], reason: str) -> CommandCapability:
    return CommandCapability(program, args, Access.MUTATING, [], reason)


def read_only(program: str, args: List[str], reason: str) -> CommandCapability:
    return CommandCapability(program, args, Access.READ_ONLY, [], reason)


def run(node: str, program: str, *args: str) -> node_exec.ExecOutput:
    """Run `program args` on `node`; a non-zero exit fails the hook."""
    try:
        out = node_exec.exec(node_exec.ExecRequest(node, program, list(args), None, [], None))
    except Err as e:
        fail(f"`{program} {' '.join(args)}` on {node}: {e.value}")
    if out.status != 0 and not out.skipped:
        err = out.stderr.decode("utf-8", "replace").strip()
        fail(f"`{program} {' '.join(args)}` on {node} exited with status {out.status}: {err}")
    return out


def info(message: str) -> None:
    _log.log(_log.Level.INFO, message)


def progress(milestone: str) -> None:
    _log.progress(milestone)


def param(ctx: Context, key: str, default: str) -> str:
    return next((p.value for p in ctx.params if p.key == key), default)


def nodes(ctx: Context) -> List[Node]:
    return ctx.nodes.all()


def state_get(key: str) -> Optional[str]:
    return state.get(key)


def state_set(key: str, value: str) -> None:
    state.set(key, value)


class Hooks(exports.Plugin):
    """Every hook a no-op (`verify` runs `check`): override what you need."""

    def depends_on(self) -> List[str]:
        return self.describe().depends_on

    def check(self, ctx: Context) -> None:
        pass

    def pre_upgrade(self, ctx: Context) -> None:
        pass

    def upgrade(self, ctx: Context, node: Node) -> None:
        pass

    def post_upgrade(self, ctx: Context) -> None:
        pass

    def finalize(self, ctx: Context) -> None:
        pass

    def rollback(self, ctx: Context) -> None:
        fail("this plugin cannot roll back")

    def migrate(self, ctx: Context) -> None:
        fail("this plugin has no migrations-only hop")

    def verify(self, ctx: Context) -> None:
        self.check(ctx)

    def leave(self, ctx: Context, node: Node) -> None:
        pass

    def rejoin(self, ctx: Context, node: Node) -> None:
        pass

    def ok_to_stop(self, ctx: Context, node: Node) -> None:
        pass
