import { spawn } from 'node:child_process';

const REPORT = new URL('../../scripts/report.ts', import.meta.url).pathname;

export interface ReportRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `npm run report` as an operator would (scripts/report.ts through tsx) with only the given env. */
export function runReport(env: Record<string, string>, args: string[] = []): Promise<ReportRun> {
  const child = spawn(process.execPath, ['--import', 'tsx', REPORT, ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  return new Promise((resolve) => {
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
