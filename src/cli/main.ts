// The `obdkit` command line: one program, subcommands registered by the modules that own them.
import { Command } from 'commander';
import { registerBaseImageCommand } from './base-image.js';
import { registerBuildCommand } from './build.js';
import { registerImageCommands } from './image.js';
import { registerLayerCommands } from './layer.js';
import { reportError } from './run.js';
import { registerMountCommands } from './mount.js';
import { registerServeCommand } from './serve.js';
import { makeBackend } from '../server/build-backend.js';

const program = new Command();
program
  .name('obdkit')
  .description('Build overlaybd images from Dockerfiles; a BuildKit-compatible builder')
  .version('0.1.0')
  .showHelpAfterError();

registerBuildCommand(program);
registerImageCommands(program);
registerMountCommands(program);
registerLayerCommands(program);
registerServeCommand(program, makeBackend);
registerBaseImageCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  reportError(err);
  process.exitCode = 1;
}
