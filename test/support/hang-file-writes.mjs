// Preloaded with `--import` into a child shim: every `open` of node:fs/promises from now on never settles,
// as on a stuck disk (the ledger's writes use it; start-up reads with the synchronous calls).
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';

fs.promises.open = () => new Promise(() => {});
syncBuiltinESMExports();
