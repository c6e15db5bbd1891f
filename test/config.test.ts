import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import { describe, expect, it } from 'vitest';
import { carriesToken } from '../src/admin.js';
import {
  ConfigError,
  jsonErrorOffset,
  keepRestartOnly,
  loadConfig,
  parseConfig,
  redactConfig,
} from '../src/config.js';
import { activeBrownout } from '../src/cutover.js';
import { deprecationHeaders } from '../src/deprecation-headers.js';

const defaults = JSON.parse(readFileSync(new URL('../config/default.json', import.meta.url), 'utf8'));

function problemsOf(run: () => unknown): string[] {
  try {
    run();
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('parseConfig', () => {
  it('gives the documented defaults', () => {
    const { config, version } = parseConfig([defaults]);
    expect(config.upstream.url).toBe('http://localhost:3003');
    expect(config.server.host).toBe('0.0.0.0');
    expect(config.server.port).toBe(8080);
    expect(config.log.level).toBe('info');
    expect(config.routes['connection-metadata'].stage).toBe('translate');
    expect(version).toMatch(/^[0-9a-f]{12}$/);
  });

  it('lets the environment override the file', () => {
    const { config } = parseConfig([defaults], {
      SHIM_UPSTREAM_URL: 'https://api.nango.dev',
      SHIM_HOST: '127.0.0.1',
      SHIM_PORT: '9000',
      SHIM_LOG_LEVEL: 'debug',
    });
    expect(config.upstream.url).toBe('https://api.nango.dev');
    expect(config.server.host).toBe('127.0.0.1');
    expect(config.server.port).toBe(9000);
    expect(config.log.level).toBe('debug');
  });

  it('reads a log level in any case, as operators write it, and gives pino its lower-case name', () => {
    expect(parseConfig([defaults], { SHIM_LOG_LEVEL: 'INFO' }).config.log.level).toBe('info');
    expect(parseConfig([defaults, { log: { level: 'Debug' } }]).config.log.level).toBe('debug');
    expect(parseConfig([defaults, { log: { level: 'WARN' } }]).config.log.level).toBe('warn');
    expect(problemsOf(() => parseConfig([defaults], { SHIM_LOG_LEVEL: 'LOUD' }))).toEqual([
      'log.level (from SHIM_LOG_LEVEL): must be equal to one of the allowed values',
    ]);
  });

  it('merges a file layer over the defaults key by key', () => {
    const { config } = parseConfig([defaults, { routes: { 'connection-metadata': { stage: 'gone' } } }]);
    expect(config.routes['connection-metadata'].stage).toBe('gone');
    expect(config.routes['connection-metadata'].sunset).toBe(defaults.routes['connection-metadata'].sunset);
    expect(config.routes['connection-get'].stage).toBe('translate');
  });

  it('names every bad field at once, environment variables included', () => {
    const problems = problemsOf(() =>
      parseConfig([defaults, { server: { bodyLimitBytes: -1 }, log: { level: 'loud' }, surprise: true }], {
        SHIM_PORT: 'eighty',
      }),
    );
    expect(problems.some((p) => p.startsWith('server.port (from SHIM_PORT)'))).toBe(true);
    expect(problems.some((p) => p.startsWith('server.bodyLimitBytes'))).toBe(true);
    expect(problems.some((p) => p.startsWith('log.level'))).toBe(true);
    expect(problems).toContain('surprise: unknown key');
  });

  it('names the cross-field problems in the same refusal as the shape problems', () => {
    const problems = problemsOf(() =>
      parseConfig(
        [
          defaults,
          {
            surprise: true,
            routes: {
              'connection-get': {
                stage: 'sideways',
                sunset: '2025-01-01T00:00:00Z',
                alwaysTranslate: ['0123456789abcdef'],
                alwaysPassthrough: ['0123456789abcdef'],
              },
              // A field the schema refused is not read again by a cross-field rule.
              'connection-list': { sunset: 'soon', alwaysTranslate: 'all' },
              'connection-delete': { deprecation: null },
            },
          },
        ],
        { SHIM_UPSTREAM_URL: 'https://user:pw/x@nango.internal' },
      ),
    );
    expect(problems).toEqual([
      'surprise: unknown key',
      'routes.connection-get.stage: must be equal to one of the allowed values',
      'routes.connection-list.alwaysTranslate: must be array',
      expect.stringMatching(/^routes\.connection-list\.sunset: must be an RFC 3339 date-time/),
      'routes.connection-delete.deprecation: must be string',
      expect.stringMatching(/^upstream\.url \(from SHIM_UPSTREAM_URL\): must be an absolute http\(s\) URL/),
      'routes.connection-get.sunset: must not be earlier than routes.connection-get.deprecation',
      'routes.connection-get: fingerprints in both alwaysTranslate and alwaysPassthrough: 0123456789abcdef',
    ]);
  });

  it('refuses a sunset earlier than the deprecation date', () => {
    const problems = problemsOf(() =>
      parseConfig([defaults, { routes: { 'connection-metadata': { sunset: '2025-01-01T00:00:00Z' } } }]),
    );
    expect(problems).toEqual([
      'routes.connection-metadata.sunset: must not be earlier than routes.connection-metadata.deprecation',
    ]);
  });

  it('refuses a headers timeout longer than the request timeout, which node:http refuses at listen', () => {
    const problems = problemsOf(() => parseConfig([defaults, { server: { headersTimeoutMs: 70_000 } }]));
    expect(problems).toEqual([
      'server.headersTimeoutMs: must not be more than server.requestTimeoutMs (60000)',
    ]);
    expect(() =>
      parseConfig([defaults, { server: { headersTimeoutMs: 60_000, requestTimeoutMs: 60_000 } }]),
    ).not.toThrow();
  });

  it('refuses a date without an explicit offset, which each host would read in its own time zone', () => {
    const expected =
      'must be an RFC 3339 date-time with an offset, as in 2026-03-02T14:00:00Z or 2026-03-02T15:00:00+01:00';
    const error = (() => {
      try {
        parseConfig([
          defaults,
          {
            routes: {
              'connection-get': {
                brownouts: [
                  { start: '2026-03-02T14:00:00', durationMinutes: 60 },
                  { start: 'March 2, 2026 14:00', durationMinutes: 60 },
                ],
              },
              'connection-list': { deprecation: '2025-08-20', sunset: '2026-01-20 00:00:00Z' },
              'connection-delete': { sunset: '2026-02-30T00:00:00Z' },
              'connection-metadata': { sunset: '2026-06-30T23:59:60Z' },
            },
          },
        ]);
      } catch (caught) {
        return caught;
      }
      throw new Error('expected a ConfigError');
    })();
    expect(error).toBeInstanceOf(ConfigError);
    expect([...(error as ConfigError).problems].sort()).toEqual([
      `routes.connection-delete.sunset: ${expected}`,
      `routes.connection-get.brownouts.0.start: ${expected}`,
      `routes.connection-get.brownouts.1.start: ${expected}`,
      `routes.connection-list.deprecation: ${expected}`,
      `routes.connection-list.sunset: ${expected}`,
      `routes.connection-metadata.sunset: ${expected}`,
    ]);
    // One line, as the service prints it at start and on a refused reload.
    expect((error as ConfigError).message).not.toContain('\n');
  });

  it('reads an RFC 3339 date-time with Z or an offset as the same instant on every host', () => {
    const at = Date.parse('2026-03-02T14:30:00Z');
    for (const start of [
      '2026-03-02T15:00:00+01:00',
      '2026-03-02t14:00:00z',
      '2026-03-02T09:00:00.000-05:00',
    ]) {
      const { config } = parseConfig([
        defaults,
        { routes: { 'connection-get': { brownouts: [{ start, durationMinutes: 60 }] } } },
      ]);
      expect(activeBrownout(config.routes['connection-get'], at), start).toBe(true);
      expect(activeBrownout(config.routes['connection-get'], at + 31 * 60_000), start).toBe(false);
    }
    expect(
      parseConfig([defaults, { routes: { 'connection-get': { sunset: '2028-02-29T00:00:00Z' } } }]),
    ).toBeDefined();
  });

  it('refuses a docs or successor URL that cannot be a Link target, which node:http would throw on', () => {
    const expected =
      'must be an absolute URI in ASCII, as in https://example.com/docs/d%C3%A9pr%C3%A9ciation (percent-encode any other character)';
    const problems = problemsOf(() =>
      parseConfig([
        defaults,
        {
          routes: {
            'connection-get': { docsUrl: 'https://wiki.example.com/deprecation→connections' },
            'connection-list': { successorUrl: 'https://wiki.example.com/a\r\nSet-Cookie: x=1' },
            'connection-delete': { docsUrl: 'docs/connection-delete' },
            'connection-metadata': { successorUrl: 'https://wiki.example.com/<successor>' },
          },
        },
      ]),
    );
    expect([...problems].sort()).toEqual([
      `routes.connection-delete.docsUrl: ${expected}`,
      `routes.connection-get.docsUrl: ${expected}`,
      `routes.connection-list.successorUrl: ${expected}`,
      `routes.connection-metadata.successorUrl: ${expected}`,
    ]);
    const { config } = parseConfig([
      defaults,
      {
        routes: { 'connection-get': { docsUrl: 'https://wiki.example.com/d%C3%A9pr%C3%A9ciation?v=2#get' } },
      },
    ]);
    expect(deprecationHeaders(config.routes['connection-get']).link).toContain(
      '<https://wiki.example.com/d%C3%A9pr%C3%A9ciation?v=2#get>; rel="deprecation"',
    );
  });

  it('refuses an admin token no Authorization header can carry, without quoting it', () => {
    const expected =
      'must be printable ASCII without spaces or line breaks (it is sent as "Authorization: Bearer <token>")';
    // A Secret created from a file keeps the file's last line break; a passphrase has spaces; curl sends
    // UTF-8 bytes that node:http reads back as Latin-1.
    for (const token of ['hunter2-hunter2-hunter2\n', 'hunter2 hunter2 hunter2', 'hunter2-mot-de-pässe-2']) {
      const problems = problemsOf(() => parseConfig([defaults], { SHIM_ADMIN_TOKEN: token }));
      expect(problems, JSON.stringify(token)).toEqual([`admin.token (from SHIM_ADMIN_TOKEN): ${expected}`]);
      expect(problems.join('\n')).not.toContain('hunter2');
    }
    const token = 'k9/Vx+Qm2Lp7Zr4Wt8Yc3Nb6Hd1Jf0S=';
    const { config } = parseConfig([defaults, { admin: { token } }]);
    expect(carriesToken(`Bearer ${token}`, config.admin.token as string)).toBe(true);
    expect(parseConfig([defaults, { admin: { token: null } }]).config.admin.token).toBeNull();
  });

  it('refuses an upstream that is not http(s)', () => {
    expect(problemsOf(() => parseConfig([defaults], { SHIM_UPSTREAM_URL: 'ftp://example.com' }))[0]).toMatch(
      /^upstream\.url \(from SHIM_UPSTREAM_URL\)/,
    );
  });

  it('accepts a URL scheme in any case, as RFC 3986 §3.1 reads it, and writes it in lower case', () => {
    const { config, version } = parseConfig(
      [
        defaults,
        {
          upstream: { url: 'HTTPS://Nango.internal/Base' },
          routes: { 'connection-get': { docsUrl: 'HTTPS://Wiki.example.com/Deprecation' } },
        },
      ],
      { SHIM_REDIS_URL: 'Redis://127.0.0.1:6379/2' },
    );
    expect(config.upstream.url).toBe('https://Nango.internal/Base');
    expect(config.redisUrl).toBe('redis://127.0.0.1:6379/2');
    expect(config.routes['connection-get'].docsUrl).toBe('https://Wiki.example.com/Deprecation');
    const lower = parseConfig(
      [
        defaults,
        {
          upstream: { url: 'https://Nango.internal/Base' },
          routes: { 'connection-get': { docsUrl: 'https://Wiki.example.com/Deprecation' } },
        },
      ],
      { SHIM_REDIS_URL: 'redis://127.0.0.1:6379/2' },
    );
    expect(version).toBe(lower.version);
    const fromEnv = parseConfig([defaults, { redisUrl: 'UNIX:///run/redis.sock?db=1' }], {
      SHIM_UPSTREAM_URL: 'HTTP://127.0.0.1:3003',
    }).config;
    expect(fromEnv.upstream.url).toBe('http://127.0.0.1:3003');
    expect(fromEnv.redisUrl).toBe('unix:///run/redis.sock?db=1');
    expect(problemsOf(() => parseConfig([defaults], { SHIM_UPSTREAM_URL: 'FTP://example.com' }))[0]).toMatch(
      /^upstream\.url \(from SHIM_UPSTREAM_URL\)/,
    );
  });

  it('refuses a Redis URL the client cannot read, naming the field, never the URL or its password', () => {
    for (const url of [
      'redis://:hunter2/pw@127.0.0.1:6379',
      'redis://:hunter2#pw@127.0.0.1:6379',
      'redis://:hunter2@127.0.0.1:99999',
      'redis://:hunter2@127.0.0.1:6379/db-hunter2',
      'redis://:hunter2%zz@127.0.0.1:6379',
      'unix:///run/redis.sock?password=hunter2&db=hunter2',
    ]) {
      const problems = problemsOf(() => parseConfig([defaults], { SHIM_REDIS_URL: url }));
      expect(problems, url).toEqual([expect.stringMatching(/^redisUrl \(from SHIM_REDIS_URL\): \S/)]);
      expect(problems.join('\n'), url).not.toContain('hunter2');
    }
    expect(problemsOf(() => parseConfig([defaults, { redisUrl: 'redis://:hunter2/pw@h:6379' }]))).toEqual([
      expect.stringMatching(/^redisUrl: is not a valid URL \(.*%2F/),
    ]);
  });

  it('refuses an upstream URL that does not parse without quoting it', () => {
    const problems = problemsOf(() =>
      parseConfig([defaults], { SHIM_UPSTREAM_URL: 'https://user:hunter2/pw@nango.internal' }),
    );
    expect(problems).toEqual([expect.stringMatching(/^upstream\.url \(from SHIM_UPSTREAM_URL\): must be/)]);
    expect(problems.join('\n')).not.toContain('hunter2');
  });

  it('refuses a duration longer than a Node timer holds, which would fire after 1 ms', () => {
    expect(
      parseConfig([defaults], { SHIM_UPSTREAM_TIMEOUT_MS: '2147483647' }).config.upstream.timeoutMs,
    ).toBe(2_147_483_647);
    expect(problemsOf(() => parseConfig([defaults], { SHIM_UPSTREAM_TIMEOUT_MS: '2147483648' }))).toEqual([
      'upstream.timeoutMs (from SHIM_UPSTREAM_TIMEOUT_MS): must be <= 2147483647',
    ]);
    const longer = { server: { shutdownGraceMs: 2 ** 31 }, ledger: { flushIntervalMs: 2 ** 31 } };
    expect(problemsOf(() => parseConfig([defaults, longer]))).toHaveLength(2);
  });

  it('freezes the result so nothing can edit the active config', () => {
    const { config } = parseConfig([defaults]);
    expect(Object.isFrozen(config.routes['connection-metadata'])).toBe(true);
  });

  it('gives a different version for a different content', () => {
    const a = parseConfig([defaults]).version;
    const b = parseConfig([defaults, { routes: { 'connection-metadata': { stage: 'gone' } } }]).version;
    expect(a).not.toBe(b);
    expect(parseConfig([defaults]).version).toBe(a);
  });

  it('leaves the value of every secret out of the version, which every config active line shows', () => {
    // With the rest of the file known (the defaults, a ConfigMap in git), a version hashed over a password
    // confirmed a guess of it offline.
    const versionWith = (password: string) =>
      parseConfig([defaults], {
        SHIM_ADMIN_TOKEN: `admin-token-${password}`,
        SHIM_REDIS_URL: `redis://:${password}@redis.internal:6379/0`,
        SHIM_UPSTREAM_URL: `https://shim:${password}@nango.internal/?key=${password}`,
      }).version;
    expect(versionWith('hunter2hunter2')).toBe(versionWith('correct-horse-battery'));
    // Whether a secret is set still counts.
    expect(parseConfig([defaults], { SHIM_ADMIN_TOKEN: 'admin-token-hunter2hunter2' }).version).not.toBe(
      parseConfig([defaults]).version,
    );
  });
});

describe('loadConfig', () => {
  it('reads a SHIM_CONFIG file that starts with a byte order mark, as an editor may save it', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'nango-shim-config-')), 'shim.json');
    writeFileSync(file, `\uFEFF${JSON.stringify({ routes: { 'connection-get': { stage: 'gone' } } })}`);
    expect(loadConfig({ SHIM_CONFIG: file }).config.routes['connection-get'].stage).toBe('gone');
  });

  it('names an unreadable SHIM_CONFIG file', () => {
    expect(problemsOf(() => loadConfig({ SHIM_CONFIG: '/nonexistent/shim.json' }))).toEqual([
      'SHIM_CONFIG (/nonexistent/shim.json): cannot be read (ENOENT)',
    ]);
  });

  it('takes an upstream.caFile of PEM certificates (or none), and names one that is missing, not PEM or damaged', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nango-shim-ca-'));
    const write = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    const [first, second] = rootCertificates as [string, string];
    // A bundle as operators keep one: comments and blank lines between the certificates.
    const bundle = write('bundle.pem', `# corporate CA\n${first}\n\n# its successor\n${second}\n`);
    expect(loadConfig({ SHIM_UPSTREAM_CA_FILE: bundle }).config.upstream.caFile).toBe(bundle);
    // OpenSSL's TRUSTED CERTIFICATE form, which Node's TLS reads as a CA too.
    const trusted = write('trusted.pem', first.replaceAll(' CERTIFICATE-----', ' TRUSTED CERTIFICATE-----'));
    expect(loadConfig({ SHIM_UPSTREAM_CA_FILE: trusted }).config.upstream.caFile).toBe(trusted);
    // An empty path in a file names no file, as an empty variable sets nothing: the default trust store.
    const noCa = write('no-ca.json', JSON.stringify({ upstream: { caFile: '' } }));
    expect(loadConfig({ SHIM_CONFIG: noCa }).config.upstream.caFile).toBe('');

    const problemFor = (caFile: string) => problemsOf(() => loadConfig({ SHIM_UPSTREAM_CA_FILE: caFile }));
    // Named as every other problem names a key the environment set.
    const key = 'upstream.caFile (from SHIM_UPSTREAM_CA_FILE)';
    expect(problemFor(join(dir, 'missing.pem'))).toEqual([
      `${key}: ${join(dir, 'missing.pem')} cannot be read (ENOENT)`,
    ]);
    const file = write('shim.json', JSON.stringify({ upstream: { caFile: join(dir, 'missing.pem') } }));
    expect(problemsOf(() => loadConfig({ SHIM_CONFIG: file }))).toEqual([
      `upstream.caFile: ${join(dir, 'missing.pem')} cannot be read (ENOENT)`,
    ]);
    const der = write(
      'ca.der',
      Buffer.from(first.split('\n').slice(1, -2).join(''), 'base64').toString('latin1'),
    );
    expect(problemFor(der)).toEqual([`${key}: ${der} holds no PEM certificate`]);
    // Cut short: its DER ends inside the structure its first bytes announce.
    const lines = second.trim().split('\n');
    const cut = [...lines.slice(0, 4), lines[lines.length - 1]].join('\n');
    const damaged = write('damaged.pem', `${first}\n${cut}\n`);
    expect(problemFor(damaged)).toEqual([`${key}: ${damaged}: certificate 2 of 2 cannot be read`]);
  });
});

describe('keepRestartOnly', () => {
  it('keeps the restart-only values in effect and names the ones that changed', () => {
    const running = parseConfig([defaults]);
    const loaded = parseConfig([
      defaults,
      {
        upstream: { url: 'https://api.nango.dev' },
        server: { port: 9999, bodyLimitBytes: 10 },
        admin: { token: 'a-new-admin-token-nobody-knows' },
        ledger: { flushIntervalMs: 50 },
        routes: { 'connection-metadata': { stage: 'gone' } },
      },
    ]);
    const next = keepRestartOnly(loaded, running.config);
    expect(next.config.upstream).toEqual(running.config.upstream);
    expect(next.config.server.port).toBe(8080);
    expect(next.config.admin.token).toBeNull();
    expect(next.config.ledger.flushIntervalMs).toBe(running.config.ledger.flushIntervalMs);
    // Read per request: these follow the reload.
    expect(next.config.server.bodyLimitBytes).toBe(10);
    expect(next.config.routes['connection-metadata'].stage).toBe('gone');
    expect(next.pendingRestart).toEqual([
      'upstream.url',
      'server.port',
      'admin.token',
      'ledger.flushIntervalMs',
    ]);
    expect(JSON.stringify(next)).not.toContain('a-new-admin-token-nobody-knows');
    expect(Object.isFrozen(next.config.server)).toBe(true);
    expect(next.version).toBe(
      parseConfig([
        defaults,
        { server: { bodyLimitBytes: 10 }, routes: { 'connection-metadata': { stage: 'gone' } } },
      ]).version,
    );
  });

  it('gives the loaded config itself when no restart-only key changed', () => {
    const running = parseConfig([defaults]);
    const loaded = parseConfig([defaults, { server: { bodyLimitBytes: 10 } }]);
    expect(keepRestartOnly(loaded, running.config)).toBe(loaded);
    expect(loaded.pendingRestart).toEqual([]);
  });
});

describe('a SHIM_CONFIG file that is not JSON', () => {
  const TOKEN = 'Zq8xV3pLm2Rt7Wk9Ys4N';

  function problemsOfFile(text: string): string[] {
    const file = join(mkdtempSync(join(tmpdir(), 'nango-shim-config-')), 'shim.json');
    writeFileSync(file, text);
    return problemsOf(() => loadConfig({ SHIM_CONFIG: file })).map((problem) =>
      problem.replace(file, '<file>'),
    );
  }

  // V8 quotes about ten characters around an unexpected token (Node 20, 22, 24): the token is never shown.
  it('names the file and the position, never the text around it', () => {
    expect(problemsOfFile(`{"admin":{"token": ${TOKEN}}}`)).toEqual([
      'SHIM_CONFIG (<file>): is not valid JSON (unexpected character at line 1, column 20)',
    ]);
    expect(problemsOfFile(`{\n  "admin": {\n    "token": ${TOKEN}\n  }\n}`)).toEqual([
      'SHIM_CONFIG (<file>): is not valid JSON (unexpected character at line 3, column 14)',
    ]);
    expect(problemsOfFile(`{"admin":{"token": "${TOKEN}"`)).toEqual([
      'SHIM_CONFIG (<file>): is not valid JSON (unexpected end at line 1, column 42)',
    ]);
    for (const text of [
      `{"admin":{"token": ${TOKEN}}}`,
      `{"admin":{"token": t${TOKEN}}}`,
      `{"admin":{"token": "${TOKEN}\u0001"}}`,
      `{"admin":{"token": "${TOKEN}"}}}${TOKEN}`,
      `[${TOKEN}]`,
    ]) {
      expect(problemsOfFile(text).join('\n'), text).not.toMatch(/Zq8|Wk9Ys4N/);
    }
  });

  it('finds where JSON.parse stopped, at the offset V8 names when it names one', () => {
    const cases: Array<[string, number]> = [
      ['{"a":1,}', 7],
      ['{"a" 1}', 5],
      ['{"a":-x}', 6],
      ['{"a":"\\q"}', 7],
      ['{"a":"\\u12"}', 10],
      ['{"a":"x\u0001"}', 7],
      ['[01]', 2],
      ['[1.]', 3],
      ['{"a":[true,null,-0.5e+3]} x', 26],
      ['{"a":tx}', 6],
      ['', 0],
      ['\ufeff{}', 0],
    ];
    for (const [text, offset] of cases) {
      expect(jsonErrorOffset(text), text).toBe(offset);
      const named = /at position (\d+)/.exec(catchMessage(() => JSON.parse(text)))?.[1];
      if (named !== undefined) expect(Number(named), text).toBe(offset);
    }
    expect(jsonErrorOffset('{"a":[1,{"b":"\\u00e9"}]}')).toBeUndefined();
  });
});

function catchMessage(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    return (error as Error).message;
  }
  return '';
}

describe('redactConfig', () => {
  it('never shows the admin token or the Redis URL', () => {
    const { config } = parseConfig([defaults], {
      SHIM_ADMIN_TOKEN: 'super-secret-admin-token',
      SHIM_REDIS_URL: 'redis://:password@127.0.0.1:6379',
    });
    const shown = JSON.stringify(redactConfig(config));
    expect(shown).not.toContain('super-secret-admin-token');
    expect(shown).not.toContain('password');
    expect(shown).toContain('"token":"[set]"');
  });

  it('never shows the user, password or query of an upstream URL, but still where it points', () => {
    const { config } = parseConfig([defaults], {
      SHIM_UPSTREAM_URL: 'https://shim-user:upstream-hunter2@nango.internal:8443/base?token=gateway-hunter3',
    });
    const shown = redactConfig(config) as { upstream: { url: string } };
    expect(JSON.stringify(shown)).not.toMatch(/hunter[23]|shim-user/);
    expect(shown.upstream.url).toBe('https://[set]@nango.internal:8443/base?[set]');
    expect(config.upstream.url).toBe(
      'https://shim-user:upstream-hunter2@nango.internal:8443/base?token=gateway-hunter3',
    );
    const queryOnly = parseConfig([defaults], {
      SHIM_UPSTREAM_URL: 'https://nango.internal/?token=t',
    }).config;
    expect((redactConfig(queryOnly) as { upstream: { url: string } }).upstream.url).toBe(
      'https://nango.internal/?[set]',
    );
    const plain = parseConfig([defaults], { SHIM_UPSTREAM_URL: 'https://api.nango.dev' }).config;
    expect((redactConfig(plain) as { upstream: { url: string } }).upstream.url).toBe('https://api.nango.dev');
  });
});
