import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** A key the echo upstream refuses with 401, as Nango refuses an unknown secret key. */
export const REFUSED_KEY = '0bad0bad-0bad-4bad-8bad-0bad0bad0bad';

export interface EchoUpstream {
  url: string;
  /** `METHOD path authorization` of every request, in arrival order. */
  requests: Array<{ method: string; url: string; authorization: string | undefined }>;
  close(): Promise<void>;
}

/**
 * The smallest upstream the usage tests need: `PATCH /connections/metadata` echoes its body with 200 (Nango's
 * successor contract), REFUSED_KEY gets Nango's 401, anything else answers 200 `{"ok":true}`.
 */
export async function startEchoUpstream(): Promise<EchoUpstream> {
  const requests: EchoUpstream['requests'] = [];
  const server = http.createServer((req, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization });
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const json = { 'content-type': 'application/json; charset=utf-8' };
      if (req.headers.authorization === `Bearer ${REFUSED_KEY}`) {
        res
          .writeHead(401, json)
          .end('{"error":{"message":"Authentication failed","code":"unknown_account"}}');
      } else if (req.method === 'PATCH' && req.url === '/connections/metadata') {
        res.writeHead(200, json).end(Buffer.concat(chunks));
      } else {
        res.writeHead(200, json).end('{"ok":true}');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A legacy `PATCH /connection/metadata` call as an old SDK makes it. */
export function patchLegacyMetadata(
  shimUrl: string,
  key: string | undefined,
  userAgent = 'nango-node/0.66.2',
): Promise<Response> {
  const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': userAgent };
  if (key !== undefined) headers.authorization = `Bearer ${key}`;
  return fetch(`${shimUrl}/connection/metadata`, {
    method: 'PATCH',
    headers,
    body: JSON.stringify({ connection_id: 'conn-1', provider_config_key: 'github', metadata: { n: 1 } }),
  });
}
