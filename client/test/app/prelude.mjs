// Loaded with node --import before a README example: what a browser page or an app would
// have around it. render*() print the rows they get, so the test can follow them.
import { WebSocket } from "ws";

globalThis.WebSocket ??= WebSocket;
globalThis.location ??= { host: process.env.PLANK_HOSTPORT, protocol: "http:" };
const rowsOf = (rows) => (rows instanceof Map ? [...rows.values()] : rows);
globalThis.render = (rows, status) => console.log(`RENDER ${JSON.stringify({ rows: rowsOf(rows), status })}`);
globalThis.renderItems = (rows) => console.log(`RENDER ${JSON.stringify({ rows: rowsOf(rows) })}`);
globalThis.showSignIn = (message) => console.log(`SIGNIN ${message}`);
