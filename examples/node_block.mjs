// LOCK.ACQUIRE ... BLOCK with ioredis and node-redis: which client timeouts re-send the
// command, which abandon it, and a connection that waits correctly.
//
// Needs a server with the module loaded (e.g. `make run`) and `npm install ioredis redis`.
//
//     node examples/node_block.mjs [port]
//
// For each setting, another client holds the lock `example:block` while this one waits with
// BLOCK 4000. The holder releases 2.5 s in. The script counts the LOCK.ACQUIRE ... BLOCK
// commands the server received (with MONITOR) and shows who holds the lock afterwards.

import IORedis from "ioredis";
import { createClient } from "redis";
import { randomUUID } from "node:crypto";

const port = Number(process.argv[2] ?? 6379);
const KEY = "example:block";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const admin = new IORedis({ port });
const monitor = await new IORedis({ port }).monitor();
let sent = 0;
monitor.on("monitor", (_time, args) => {
  if (args[0].toUpperCase() === "LOCK.ACQUIRE" && args[1] === KEY && args.includes("BLOCK")) sent++;
});

async function info() {
  const r = await admin.call("LOCK.INFO", KEY);
  if (!r) return "free";
  const m = Object.fromEntries(r.map((v, i) => (i % 2 ? null : [v, r[i + 1]])).filter(Boolean));
  return `held (waiters ${m.waiters})`;
}

// One wait: `acquire(token)` sends LOCK.ACQUIRE KEY 30000 TOKEN token BLOCK 4000.
// `release(token)` is what the caller does after a client-side timeout or error.
async function scenario(name, acquire, release) {
  await admin.del(KEY);
  await admin.call("LOCK.ACQUIRE", KEY, 120000, "TOKEN", "holder");
  sent = 0;
  const token = randomUUID(); // always pass a TOKEN with BLOCK
  const start = Date.now();
  const releaseHolder = sleep(2500).then(() => admin.call("LOCK.RELEASE", KEY, "holder"));
  let outcome;
  try {
    outcome = JSON.stringify(await acquire(token));
  } catch (e) {
    outcome = `${e.constructor.name}: ${e.message}`;
  }
  const after = ((Date.now() - start) / 1000).toFixed(1);
  const queued = await info();
  await releaseHolder;
  await sleep(300);
  const later = await info();
  let released = "";
  if (release && later !== "free") released = `; LOCK.RELEASE with our token: ${await release(token)}`;
  console.log(`${name}\n  sent ${sent}x; after ${after} s: ${outcome}\n` +
    `  lock right then: ${queued}; after the holder released: ${later}${released}`);
  await sleep(4500); // let any abandoned wait end before the next scenario
  await admin.del(KEY);
}

const args = (token) => ["LOCK.ACQUIRE", KEY, "30000", "TOKEN", token, "BLOCK", "4000"];

console.log(`port ${port}: BLOCK 4000, the holder releases after 2.5 s`);

{
  const c = new IORedis({ port });
  await scenario("ioredis, defaults (no socketTimeout, no commandTimeout)",
    (t) => c.call(...args(t)));
  c.disconnect();
}
{
  const c = new IORedis({ port, commandTimeout: 1500 });
  await scenario("ioredis, commandTimeout 1500: the reply is abandoned, the wait goes on",
    (t) => c.call(...args(t)), (t) => admin.call("LOCK.RELEASE", KEY, t));
  c.disconnect();
}
{
  const c = new IORedis({ port, socketTimeout: 1500 });
  c.on("error", () => {});
  await scenario("ioredis, socketTimeout 1500: the connection is closed",
    (t) => c.call(...args(t)), (t) => admin.call("LOCK.RELEASE", KEY, t));
  c.disconnect();
}
{
  // The fix: the application's client keeps its timeouts; waits get their own connection.
  const c = new IORedis({ port, commandTimeout: 1500, socketTimeout: 1500 });
  const waiter = c.duplicate({ commandTimeout: undefined, socketTimeout: undefined });
  await scenario("ioredis, duplicate() without commandTimeout and socketTimeout",
    (t) => waiter.call(...args(t)));
  c.disconnect();
  waiter.disconnect();
}
{
  const c = createClient({ socket: { port } });
  await c.connect();
  await scenario("node-redis, defaults", (t) => c.sendCommand(args(t)));
  c.destroy();
}
{
  const c = createClient({ socket: { port } });
  await c.connect();
  await scenario("node-redis, sendCommand(..., { timeout: 1500 })",
    (t) => c.sendCommand(args(t), { timeout: 1500 }), (t) => admin.call("LOCK.RELEASE", KEY, t));
  c.destroy();
}
{
  const c = createClient({ socket: { port, socketTimeout: 1500 } });
  c.on("error", () => {});
  await c.connect();
  await scenario("node-redis, socket.socketTimeout 1500",
    (t) => c.sendCommand(args(t)), (t) => admin.call("LOCK.RELEASE", KEY, t));
  c.destroy();
}
{
  const c = createClient({ socket: { port, socketTimeout: 1500 } });
  c.on("error", () => {});
  await c.connect();
  const waiter = c.duplicate({ socket: { port, socketTimeout: undefined } });
  await waiter.connect();
  await scenario("node-redis, duplicate() without socketTimeout",
    (t) => waiter.sendCommand(args(t)));
  c.destroy();
  waiter.destroy();
}

monitor.disconnect();
admin.disconnect();
