// Bare Node.js net raw echo. Usage: node node_net.js [--host H] [--port P]
const net = require("net");
const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const host = opt("--host", "127.0.0.1");
const port = Number(opt("--port", "0"));
const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  socket.on("error", () => socket.destroy());
  socket.pipe(socket);
});
server.listen({ host, port, backlog: 1024 }, () => {
  console.log(`listening on ${host}:${server.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
