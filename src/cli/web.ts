// `memvirt web`: serves the playground (the static site `npm run web:build` writes to web/dist/) on
// 127.0.0.1 and prints its URL. Files only, from that one directory: the page needs no backend.
import { createReadStream, existsSync, statSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { MemvirtError } from "../core/errors.js";

/** web/dist beside dist/ (a checkout) or inside the installed package: three directories up. */
export const SITE = fileURLToPath(new URL("../../../web/dist/", import.meta.url));

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
};

/** A server for the files under `root`; anything else (or outside it) is a 404. */
export function siteServer(root: string): Server {
  const base = resolve(root);
  return createServer((request, response) => {
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    let path: string;
    try {
      path = decodeURIComponent(new URL(request.url ?? "/", "http://localhost").pathname);
    } catch {
      response.writeHead(400).end();
      return;
    }
    let file = resolve(join(base, path));
    if (file !== base && !file.startsWith(base + sep)) {
      response.writeHead(404).end();
      return;
    }
    if (existsSync(file) && statSync(file).isDirectory()) file = join(file, "index.html");
    if (!existsSync(file) || !statSync(file).isFile()) {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    response.writeHead(200, {
      "content-type": TYPES[extname(file)] ?? "application/octet-stream",
      "content-length": statSync(file).size,
      "x-content-type-options": "nosniff",
      "cache-control": "no-cache",
    });
    if (request.method === "HEAD") response.end();
    else createReadStream(file).pipe(response);
  });
}

/** Serves `root` on 127.0.0.1:`port` (0: any free port); resolves to the server and its URL. */
export function serveSite(root: string, port: number): Promise<{ server: Server; url: string }> {
  if (!existsSync(join(root, "index.html"))) {
    throw new MemvirtError(
      `${root}: the playground is not built: run \`npm run web:build\` (it writes web/dist/)`,
    );
  }
  const server = siteServer(root);
  return new Promise((done, fail) => {
    server.once("error", (error: NodeJS.ErrnoException) =>
      fail(
        new MemvirtError(
          error.code === "EADDRINUSE"
            ? `--port ${port}: the port is in use; pass another with --port`
            : `--port ${port}: ${error.message}`,
        ),
      ),
    );
    server.listen(port, "127.0.0.1", () => {
      const address = server.address() as { port: number };
      done({ server, url: `http://127.0.0.1:${address.port}/` });
    });
  });
}

/** The command: serve until interrupted. */
export async function runWeb(port: number, print: (text: string) => void, root = SITE): Promise<number> {
  const { server, url } = await serveSite(root, port);
  print(`memvirt playground: ${url}  (Ctrl-C stops it)`);
  await new Promise<void>((done) => {
    const stop = () => server.close(() => done());
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
  return 0;
}
