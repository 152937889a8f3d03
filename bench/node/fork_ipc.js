// node's child_process.fork IPC, measured the way bench/benches/workers.rs
// measures arbor: spawn-to-ready of one child, 100 children at once, and a
// round trip of a 64 B and a 4 KiB message. Prints one JSON object.
// Usage: node bench/node/fork_ipc.js
'use strict';
const { fork } = require('child_process');

if (process.argv[2] === 'child') {
  process.on('message', (m) => process.send(m));
  process.send('ready');
  return;
}

const now = () => Number(process.hrtime.bigint());
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function spawnReady() {
  return new Promise((resolve) => {
    const start = now();
    const child = fork(__filename, ['child']);
    child.once('message', () => resolve({ child, ns: now() - start }));
  });
}

async function main() {
  const spawn = [];
  for (let i = 0; i < 30; i++) {
    const { child, ns } = await spawnReady();
    spawn.push(ns);
    child.kill('SIGKILL');
  }
  const spawn100 = [];
  for (let i = 0; i < 5; i++) {
    const start = now();
    const children = await Promise.all(Array.from({ length: 100 }, spawnReady));
    spawn100.push(now() - start);
    children.forEach(({ child }) => child.kill('SIGKILL'));
  }
  const { child } = await spawnReady();
  const roundTrip = {};
  for (const size of [64, 4096]) {
    const payload = 'x'.repeat(size);
    const runs = [];
    for (let r = 0; r < 5; r++) {
      const n = 2000;
      const start = now();
      for (let i = 0; i < n; i++) {
        await new Promise((resolve) => {
          child.once('message', resolve);
          child.send(payload);
        });
      }
      runs.push((now() - start) / n);
    }
    roundTrip[size] = median(runs);
  }
  child.kill('SIGKILL');
  console.log(JSON.stringify({
    spawn_to_ready_ns: median(spawn),
    spawn_100_ns: median(spawn100),
    round_trip_64_ns: roundTrip[64],
    round_trip_4096_ns: roundTrip[4096],
  }));
}
main();
