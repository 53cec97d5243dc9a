// The `obdkit` command line: one program, subcommands registered by the modules that own them.
import { Command } from 'commander';
import { registerLayerCommands } from './layer.js';

const program = new Command();
program
  .name('obdkit')
  .description('Build overlaybd images from Dockerfiles; a BuildKit-compatible builder')
  .version('0.1.0')
  .showHelpAfterError();

registerLayerCommands(program);

await program.parseAsync(process.argv);
