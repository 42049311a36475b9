// Child processes of the SDK tests: free loopback ports, waiting for a line a process prints, stopping it.

import { createServer } from 'node:net';

/** A loopback port free at the moment of asking. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves once `proc` printed a line matching `re` on `stream`, with the match. */
export function waitFor(proc, stream, re, what, ms = 30000) {
  let seen = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start within ${ms} ms:\n${seen}`)), ms);
    const onData = (d) => {
      seen = (seen + d.toString()).slice(-4000);
      const m = seen.match(re);
      if (m) {
        clearTimeout(timer);
        proc[stream].off('data', onData);
        resolve(m);
      }
    };
    proc[stream].on('data', onData);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited early with ${code}:\n${seen}`));
    });
  });
}

/** Stops `proc` with `signal` (SIGKILL after 5 s) and resolves once it exited. */
export function stop(proc, signal = 'SIGTERM') {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
    const kill = setTimeout(() => proc.kill('SIGKILL'), 5000);
    proc.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    proc.kill(signal);
  });
}
