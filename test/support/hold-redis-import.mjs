// Preloaded with `--import` into a child shim: holds the start-up's import of the Redis client (see the hooks).
import { register } from 'node:module';

register(new URL('./hold-redis-hooks.mjs', import.meta.url));
