const PREV = Symbol('live-list previous');
const NEXT = Symbol('live-list next');
const LIST = Symbol('live-list owner');

interface Linked {
  [PREV]?: Linked | undefined;
  [NEXT]?: Linked | undefined;
  [LIST]?: LiveList<object> | undefined;
}

/**
 * The objects in use right now (responses in flight, open connections), where they come and go at request
 * rate: a doubly linked list through three symbol fields on the objects themselves, so adding and removing
 * allocate nothing.
 *
 * Not a Set: a Set or Map added to and deleted from thousands of times a second builds a new table every
 * few hundred calls, and each replaced table keeps pointers to the next table and to the objects it held.
 * A full GC moves the current table, live, into the old generation; from then on each replaced table, dead
 * there but not collected until the next full GC, keeps its successor and the responses in it alive through
 * every young-generation GC. Whole requests were promoted: 1.4-1.7 MB per scavenge instead of a few KB, a
 * full GC every 1.5 s, peak RSS 145 MB instead of 110 (docs/performance.md). A removed object here has its
 * fields cleared, so nothing dead points at anything young.
 */
export class LiveList<T extends object> {
  #head: Linked | undefined;
  #size = 0;

  get size(): number {
    return this.#size;
  }

  add(item: T): void {
    const node = item as Linked;
    if (node[LIST] === this) return;
    if (node[LIST] !== undefined) throw new Error('the item is in another LiveList');
    node[LIST] = this;
    node[PREV] = undefined;
    node[NEXT] = this.#head;
    if (this.#head) this.#head[PREV] = node;
    this.#head = node;
    this.#size++;
  }

  /** Takes the item out; false if it was not in this list. */
  delete(item: T): boolean {
    const node = item as Linked;
    if (node[LIST] !== this) return false;
    const prev = node[PREV];
    const next = node[NEXT];
    if (prev) prev[NEXT] = next;
    else this.#head = next;
    if (next) next[PREV] = prev;
    node[LIST] = undefined;
    node[PREV] = undefined;
    node[NEXT] = undefined;
    this.#size--;
    return true;
  }

  /** The items, newest first, as a copy: the caller may delete while it walks it. */
  toArray(): T[] {
    const items: T[] = [];
    for (let node = this.#head; node; node = node[NEXT]) items.push(node as T);
    return items;
  }
}
