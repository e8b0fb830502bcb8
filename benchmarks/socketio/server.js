"use strict";
/*
 * socket.io with @socket.io/postgres-adapter, for `pgpulse bench --compare socketio`.
 *
 * Two socket.io servers share this process, each with its own adapter and pg
 * pool, as two nodes of a cluster would: the "sockets" node holds the
 * clients, and the "publisher" node serves POST /publish. A publish is
 * emitted to the tenant's room on the publisher node, which holds no
 * sockets, so every message reaches its clients the way it does in a
 * multi-node deployment: the adapter's NOTIFY, the sockets node's LISTEN,
 * and that node's broadcast to the room. Nothing is stored (payloads under
 * 8000 bytes never touch the adapter's table) and nothing is numbered: the
 * bench counts loss and duplicates by the `seq` its publisher puts in each
 * message.
 *
 * Clients connect to /socket.io/?EIO=4&transport=websocket&tenant_id=T, join
 * room T, and get a "ready" event once joined. POST /publish?tenant_id=T
 * emits its JSON body as an "event" to room T and answers once the adapter
 * has sent its NOTIFY (see emitToRoom). GET /healthz answers
 * 200 once the sockets node has heard from the publisher node through
 * PostgreSQL, so that the bench publishes only when messages can arrive.
 *
 * Run it with DATABASE_URL=postgresql://... node server.js --port 18001 after
 * `npm ci` in this folder (or with NODE_PATH at a node_modules that has the
 * packages of package-lock.json; `pgpulse bench` does that itself).
 * Do not use it for anything but comparison.
 */

const http = require("node:http");
const { parseArgs } = require("node:util");
const { Pool } = require("pg");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/postgres-adapter");

const DATABASE_URL = process.env.DATABASE_URL || "postgresql://postgres@127.0.0.1:5432/postgres";
const { values: args } = parseArgs({
  options: { host: { type: "string", default: "127.0.0.1" }, port: { type: "string", default: "18001" } },
});
const HOST = args.host;
const PORT = Number(args.port);

// The adapter's own table, which its documentation asks the application to create;
// it holds only payloads over 8000 bytes (and binary ones), which the bench does not send.
const ATTACHMENTS = `
  CREATE TABLE IF NOT EXISTS socket_io_attachments (
      id          bigserial UNIQUE,
      created_at  timestamptz DEFAULT NOW(),
      payload     bytea
  )`;

function node() {
  const pool = new Pool({ connectionString: DATABASE_URL });
  pool.on("error", (err) => console.error("pg pool:", err.message));
  const io = new Server();
  io.adapter(createAdapter(pool));
  return io;
}

/*
 * What `io.to(room).emit(name, data)` does, keeping the promise that emit() drops:
 * it settles once the adapter's NOTIFY has gone out (the adapter logs and swallows a
 * failed one). Without it the endpoint answers before PostgreSQL has the message, and
 * closed-loop publishers outrun the adapter: the backlog grows for the whole run.
 */
function emitToRoom(io, room, name, data) {
  const packet = { type: 2 /* socket.io-parser's PacketType.EVENT */, data: [name, data] };
  return io.of("/").adapter.broadcast(packet, { rooms: new Set([room]), except: new Set(), flags: {} });
}

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(text),
  });
  res.end(text);
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function main() {
  const setup = new Pool({ connectionString: DATABASE_URL, max: 1 });
  await setup.query(ATTACHMENTS);
  await setup.end();

  const sockets = node();
  const publisher = node();

  sockets.on("connection", (socket) => {
    const tenant = socket.handshake.query.tenant_id;
    if (typeof tenant !== "string" || tenant === "") {
      socket.disconnect(true);
      return;
    }
    socket.join(tenant);
    socket.emit("ready");
  });

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://localhost");
    try {
      if (req.method === "POST" && url.pathname === "/publish") {
        const tenant = url.searchParams.get("tenant_id");
        let body;
        try {
          body = JSON.parse(await readBody(req));
        } catch {
          return reply(res, 400, { detail: "the body is not JSON" });
        }
        if (!tenant) return reply(res, 400, { detail: "tenant_id is required" });
        await emitToRoom(publisher, tenant, "event", body);
        return reply(res, 200, { ok: true });
      }
      if (req.method === "GET" && url.pathname === "/healthz") {
        const servers = await sockets.of("/").adapter.serverCount();
        return reply(res, servers >= 2 ? 200 : 503, { servers });
      }
      return reply(res, 404, { detail: "not found" });
    } catch (err) {
      return reply(res, 500, { detail: String(err) });
    }
  });
  sockets.attach(server);
  server.listen(PORT, HOST);

  const stop = () => {
    sockets.close();
    publisher.close();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
