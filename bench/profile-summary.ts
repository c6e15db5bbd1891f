/**
 * Reads a V8 `.cpuprofile` (node --cpu-prof) and summarises where the time went: self time per function,
 * self time per origin (the shim's own code, http-proxy-3, pino, node internals, GC…), and inclusive time
 * of the shim's and the logger's functions. Only samples inside the load window are counted, so startup
 * (config, ajv compilation) and warm-up do not blur the picture.
 */
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export type Origin = 'shim' | 'http-proxy-3' | 'logger' | 'node' | 'native/v8' | 'gc' | 'program' | 'other';

export interface FrameTime {
  frame: string;
  origin: Origin;
  ms: number;
  share: number;
}

export interface ProfileSummary {
  busyMs: number;
  idleMs: number;
  windowed: boolean;
  byOrigin: Array<{ origin: Origin; ms: number; share: number }>;
  self: FrameTime[];
  inclusive: FrameTime[];
}

const LOGGER_PACKAGES = [
  'pino',
  'pino-std-serializers',
  'sonic-boom',
  'fast-redact',
  '@pinojs/redact',
  'quick-format-unescaped',
  'safe-stable-stringify',
  'thread-stream',
  'atomic-sleep',
  'on-exit-leak-free',
  'fast-safe-stringify',
];

function packageOf(url: string): string | undefined {
  const at = url.lastIndexOf('/node_modules/');
  if (at === -1) return undefined;
  const rest = url.slice(at + '/node_modules/'.length).split('/');
  return rest[0]?.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
}

function originOf(frame: CallFrame, root: string): Origin {
  const { url, functionName } = frame;
  if (functionName === '(garbage collector)') return 'gc';
  // Native work V8 cannot attribute to a JS frame: libuv, the HTTP parser callbacks' C++ side, syscalls.
  if (functionName === '(program)') return 'program';
  if (url === '') return 'native/v8';
  if (url.startsWith('node:')) return 'node';
  const pkg = packageOf(url);
  if (pkg === 'http-proxy-3') return 'http-proxy-3';
  if (pkg !== undefined && LOGGER_PACKAGES.includes(pkg)) return 'logger';
  if (pkg === undefined && url.includes(`${root}dist/`)) return 'shim';
  return 'other';
}

function describe(frame: CallFrame, root: string): string {
  const name = frame.functionName || '(anonymous)';
  if (frame.url === '') return name;
  let where = frame.url.replace(/^file:\/\//, '');
  if (where.startsWith(root)) where = where.slice(root.length);
  where = where.replace(/^.*node_modules\//, '');
  return `${name}  ${where}:${frame.lineNumber + 1}`;
}

/** `root` is the project directory with a trailing slash; the window is in microseconds (hrtime / 1000). */
export function summariseProfile(
  file: string,
  root: string,
  window?: { startUs: number; endUs: number },
): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const node of profile.nodes) {
    byId.set(node.id, node);
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  const windowed =
    window !== undefined && window.startUs < profile.endTime && window.endUs > profile.startTime;

  const self = new Map<string, FrameTime>();
  const inclusive = new Map<string, FrameTime>();
  const origins = new Map<Origin, number>();
  let busyUs = 0;
  let idleUs = 0;
  let clock = profile.startTime;
  for (let index = 0; index < samples.length; index++) {
    // timeDeltas[i] is the gap before sample i; the time a sample stands for is the gap after it.
    clock += deltas[index] ?? 0;
    const weight = Math.max(0, deltas[index + 1] ?? deltas[index] ?? 0);
    if (windowed && (clock < window.startUs || clock > window.endUs)) continue;
    const node = byId.get(samples[index] as number);
    if (!node) continue;
    const name = node.callFrame.functionName;
    if (name === '(idle)' || name === '(root)') {
      idleUs += weight;
      continue;
    }
    busyUs += weight;
    const origin = originOf(node.callFrame, root);
    origins.set(origin, (origins.get(origin) ?? 0) + weight);
    const key = describe(node.callFrame, root);
    const entry = self.get(key) ?? { frame: key, origin, ms: 0, share: 0 };
    entry.ms += weight;
    self.set(key, entry);
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const frame = byId.get(id)?.callFrame;
      if (!frame) break;
      const frameOrigin = originOf(frame, root);
      if (frameOrigin !== 'shim' && frameOrigin !== 'logger') continue;
      const frameKey = describe(frame, root);
      if (seen.has(frameKey)) continue;
      seen.add(frameKey);
      const total = inclusive.get(frameKey) ?? { frame: frameKey, origin: frameOrigin, ms: 0, share: 0 };
      total.ms += weight;
      inclusive.set(frameKey, total);
    }
  }
  const finish = (entries: Iterable<FrameTime>) =>
    [...entries]
      .map((entry) => ({ ...entry, ms: entry.ms / 1000, share: busyUs === 0 ? 0 : entry.ms / busyUs }))
      .sort((a, b) => b.ms - a.ms);
  return {
    busyMs: busyUs / 1000,
    idleMs: idleUs / 1000,
    windowed,
    byOrigin: [...origins]
      .map(([origin, us]) => ({ origin, ms: us / 1000, share: busyUs === 0 ? 0 : us / busyUs }))
      .sort((a, b) => b.ms - a.ms),
    self: finish(self.values()),
    inclusive: finish(inclusive.values()),
  };
}

function percent(share: number): string {
  return `${(share * 100).toFixed(1).padStart(5)}%`;
}

export function formatProfileSummary(
  label: string,
  summary: ProfileSummary,
  requests: number,
  top = 25,
): string {
  const perReq = (ms: number) =>
    requests > 0 ? `${((ms * 1000) / requests).toFixed(1).padStart(6)} µs/req` : '';
  const lines = [
    `── ${label}: ${summary.busyMs.toFixed(0)} ms busy, ${summary.idleMs.toFixed(0)} ms idle` +
      `${summary.windowed ? ' (load window only)' : ' (whole profile)'}, ${requests} requests`,
    '  self time by origin:',
    ...summary.byOrigin.map((entry) => `    ${percent(entry.share)} ${perReq(entry.ms)}  ${entry.origin}`),
    '  top self time:',
    ...summary.self
      .slice(0, top)
      .map((entry) => `    ${percent(entry.share)} ${perReq(entry.ms)}  [${entry.origin}] ${entry.frame}`),
  ];
  if (summary.inclusive.length > 0) {
    lines.push(
      '  inclusive time of shim and logger functions:',
      ...summary.inclusive
        .slice(0, top)
        .map((entry) => `    ${percent(entry.share)} ${perReq(entry.ms)}  [${entry.origin}] ${entry.frame}`),
    );
  }
  return lines.join('\n');
}

/**
 * Where a profiled process spends more CPU per request than a baseline: self time per function, in µs per
 * request, `subject − baseline`, largest first. Meant for the shim against the bare reference under the same
 * load; frames only the shim has (its own code, pino, prom-client) show up with their whole cost.
 */
export function formatProfileDiff(
  label: string,
  subject: { summary: ProfileSummary; requests: number },
  baseline: { summary: ProfileSummary; requests: number },
  top = 25,
): string {
  const perReq = (entries: FrameTime[], requests: number) =>
    new Map(
      entries.map((entry) => [entry.frame, { origin: entry.origin, us: (entry.ms * 1000) / requests }]),
    );
  const a = perReq(subject.summary.self, Math.max(1, subject.requests));
  const b = perReq(baseline.summary.self, Math.max(1, baseline.requests));
  const frames = new Set([...a.keys(), ...b.keys()]);
  const rows = [...frames]
    .map((frame) => {
      const mine = a.get(frame);
      const theirs = b.get(frame);
      return {
        frame,
        origin: mine?.origin ?? theirs?.origin ?? 'other',
        subject: mine?.us ?? 0,
        baseline: theirs?.us ?? 0,
      };
    })
    .map((row) => ({ ...row, delta: row.subject - row.baseline }))
    .sort((x, y) => y.delta - x.delta)
    .slice(0, top);
  const total = (entries: FrameTime[], requests: number) =>
    entries.reduce((sum, entry) => sum + entry.ms, 0) * (1000 / Math.max(1, requests));
  const subjectTotal = total(subject.summary.self, subject.requests);
  const baselineTotal = total(baseline.summary.self, baseline.requests);
  return [
    `── ${label}: ${subjectTotal.toFixed(1)} vs ${baselineTotal.toFixed(1)} µs/req sampled busy time ` +
      `(${(subjectTotal - baselineTotal >= 0 ? '+' : '') + (subjectTotal - baselineTotal).toFixed(1)})`,
    '  largest increases in self time (µs/req: subject, baseline, difference):',
    ...rows.map(
      (row) =>
        `    ${row.subject.toFixed(1).padStart(6)} ${row.baseline.toFixed(1).padStart(6)} ${`${row.delta >= 0 ? '+' : ''}${row.delta.toFixed(1)}`.padStart(7)}  [${row.origin}] ${row.frame}`,
    ),
  ].join('\n');
}
