// `obdkit base-image REF`: make a Debian base image from Debian packages (debootstrap minbase, made once
// and cached) and push it as an ordinary one-layer OCI image — the starting point of the embedded default.
import { join } from 'node:path';
import type { Command } from 'commander';
import { makeDebianBase } from '../base-image/debian-base.js';
import { pushBaseImage } from '../base-image/push-base.js';
import { DEFAULT_ROOT } from '../store/content-store.js';
import { log } from '../util/log.js';
import { runAction } from './run.js';

export function registerBaseImageCommand(program: Command): void {
  program
    .command('base-image')
    .description('make a Debian base image with debootstrap (cached) and push it to REF')
    .argument('<ref>', 'where to push, e.g. 127.0.0.1:5000/debian:bookworm')
    .option('--suite <name>', 'Debian suite', 'bookworm')
    .option('--mirror <url>', "Debian mirror (default: the one this machine's apt uses)")
    .option('--root <dir>', 'state directory (the base layer is cached under it)', DEFAULT_ROOT)
    .action(runAction(async (ref: string, o: { suite: string; mirror?: string; root: string }) => {
      const started = Date.now();
      const base = await makeDebianBase({ suite: o.suite, cacheDir: join(o.root, 'base-images'), ...(o.mirror ? { mirror: o.mirror } : {}) });
      log.info({ suite: o.suite, built: base.built, layerBytes: base.size, rootfsBytes: base.rootfsBytes, seconds: (Date.now() - started) / 1000 }, 'base layer ready');
      const pushed = await pushBaseImage(base, ref);
      process.stdout.write(`${ref}@${pushed.digest}\n`);
    }));
}
