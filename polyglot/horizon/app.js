// Horizon (OpenStack dashboard), written in JavaScript: one controller at
// a time, install the new release, rebuild its static files and compressed
// assets, reload Apache, check it runs. The other controllers keep serving.
import { exec } from 'uphost:plugin/node-exec@0.2.0';
import { log, progress } from 'uphost:plugin/log@0.2.0';

const MANAGE = '/usr/share/openstack-dashboard/manage.py';

// Fail the hook: the operator sees the message.
function fail(message) {
  throw { message };
}

// Run `program args` on `node`; a non-zero exit fails the hook.
function run(node, program, ...args) {
  let out;
  try {
    out = exec({ node, program, args, stdin: undefined, env: [], timeoutMs: undefined });
  } catch (e) {
    fail(`\`${program} ${args.join(' ')}\` on ${node}: ${JSON.stringify(e.payload ?? e)}`);
  }
  if (out.status !== 0 && !out.skipped) {
    const err = new TextDecoder().decode(out.stderr).trim();
    fail(`\`${program} ${args.join(' ')}\` on ${node} exited with status ${out.status}: ${err}`);
  }
  return out;
}

const cap = (access, program, args, reason) => ({ program, args, access, env: [], reason });

export const plugin = {
  describe() {
    return {
      name: 'horizon',
      version: '0.1.0',
      description: 'Horizon dashboard (JavaScript): rolling, one controller at a time',
      dependsOn: ['keystone'],
      capabilities: [
        cap('mutating', 'apt-get', ['install', '-y', 'openstack-dashboard=*'], 'install the new release'),
        cap('mutating', 'python3', [MANAGE, 'collectstatic|compress', '--noinput|--force'],
          'rebuild the static files and the compressed assets'),
        cap('mutating', 'systemctl', ['reload', 'apache2'], 'serve the new release'),
        cap('read-only', 'systemctl', ['is-active', 'apache2'], 'is Apache running?'),
      ],
      rollout: { tag: 'one-at-a-time' },
      reversible: false,
      releases: undefined,
      nodeGuard: false,
      probes: [],
      okToStop: false,
      reboots: false,
    };
  },
  dependsOn() {
    return ['keystone'];
  },
  check(ctx) {
    for (const n of ctx.nodes.all()) run(n.name, 'systemctl', 'is-active', 'apache2');
  },
  preUpgrade(ctx) {},
  upgrade(ctx, node) {
    run(node.name, 'apt-get', 'install', '-y', `openstack-dashboard=${ctx.toVersion}`);
    run(node.name, 'python3', MANAGE, 'collectstatic', '--noinput');
    run(node.name, 'python3', MANAGE, 'compress', '--force');
    run(node.name, 'systemctl', 'reload', 'apache2');
    run(node.name, 'systemctl', 'is-active', 'apache2');
    log('info', `horizon ${ctx.toVersion} serving on ${node.name}`);
  },
  postUpgrade(ctx) {},
  finalize(ctx) {},
  rollback(ctx) {
    fail('horizon cannot roll back: reinstall the previous release');
  },
  migrate(ctx) {
    fail('horizon has no migrations-only hop');
  },
  verify(ctx) {
    this.check(ctx);
  },
  leave(ctx, node) {},
  rejoin(ctx, node) {},
  okToStop(ctx, node) {},
};
