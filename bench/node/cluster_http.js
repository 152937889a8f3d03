// node's cluster module, the comparison for arbor's pools: N workers (default
// 2) each running a hello-world HTTP server whose body names its pid, like
// http-hello. On Linux the primary accepts and hands connections out
// round-robin (cluster.SCHED_RR), as arbor's handoff mode does.
// Usage: node cluster_http.js PORT [WORKERS]; prints "ready" once all listen.
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

const port = Number(process.argv[2]);
const workers = Number(process.argv[3] || 2);

if (cluster.isPrimary) {
  cluster.schedulingPolicy = cluster.SCHED_RR;
  let listening = 0;
  cluster.on('listening', () => {
    listening += 1;
    if (listening === workers) console.log('ready');
  });
  for (let i = 0; i < workers; i += 1) cluster.fork();
  process.on('SIGTERM', () => {
    for (const id in cluster.workers) cluster.workers[id].kill();
    process.exit(0);
  });
} else {
  const body = `hello from pid ${process.pid}\n`;
  http
    .createServer((req, res) => {
      res.writeHead(200, {
        'content-type': 'text/plain',
        'content-length': Buffer.byteLength(body),
      });
      res.end(body);
    })
    .listen(port, '127.0.0.1');
}
