// Starts disk writeback of the upper data file window by window while a device is being written
// (see WRITEBACK_WINDOW in shared-upper.ts). Runs in its own thread because sync_file_range may block
// when the disk queue is full, and no FUSE request should wait for that. Stops when the stop flag in
// the shared control block is set.
import { closeSync, openSync } from 'node:fs';
import { workerData } from 'node:worker_threads';
import { SECTOR } from './rw-pair.js';
import { CTRL_STOP, CTRL_WINDOWS, WRITEBACK_WINDOW, type SharedUpperState } from './shared-upper.js';
import { startWriteback } from './syscalls.js';

const { state } = workerData as { state: SharedUpperState };
const ctrl = new Int32Array(state.ctrl);
const fd = state.fds?.data ?? openSync(state.paths.data, 'r');
let done = Atomics.load(ctrl, CTRL_WINDOWS);
try {
  while (Atomics.load(ctrl, CTRL_STOP) === 0) {
    Atomics.wait(ctrl, CTRL_WINDOWS, done, 1000);
    const ready = Atomics.load(ctrl, CTRL_WINDOWS);
    for (; done < ready && Atomics.load(ctrl, CTRL_STOP) === 0; done++) {
      startWriteback(fd, done * WRITEBACK_WINDOW * SECTOR, WRITEBACK_WINDOW * SECTOR);
    }
  }
} finally {
  if (!state.fds) closeSync(fd);
}
