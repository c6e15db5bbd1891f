import type { IncomingMessage } from 'node:http';

export type BodyFailure = 'too-large' | 'aborted';

export class BodyError extends Error {
  readonly failure: BodyFailure;
  /** The chunks read before the limit was passed, that last one included: the validate stage sends them on. */
  readonly received: readonly Buffer[];
  constructor(failure: BodyFailure, received: readonly Buffer[] = []) {
    super(failure === 'too-large' ? 'request body over the limit' : 'request body did not arrive whole');
    this.name = 'BodyError';
    this.failure = failure;
    this.received = received;
  }
}

/**
 * Reads a whole request body, never more than `limit` bytes: a declared Content-Length over the limit is
 * refused before a byte is read, and a stream that grows past it is cut off. A body that does not arrive
 * whole rejects with 'aborted', so it is never forwarded.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) return Promise.reject(new BodyError('too-large'));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const fail = (failure: BodyFailure) => {
      if (settled) return;
      settled = true;
      cleanup();
      reject(new BodyError(failure, failure === 'too-large' ? chunks : []));
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      chunks.push(chunk);
      if (size > limit) {
        req.pause();
        fail('too-large');
      }
    };
    const onEnd = () => {
      if (settled) return;
      settled = true;
      cleanup();
      if (!req.complete) return reject(new BodyError('aborted'));
      resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size));
    };
    const onAborted = () => fail('aborted');
    const onClose = () => {
      if (!req.complete) fail('aborted');
    };
    function cleanup() {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onAborted);
      req.off('aborted', onAborted);
      req.off('close', onClose);
    }
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onAborted);
    req.on('aborted', onAborted);
    req.on('close', onClose);
  });
}
