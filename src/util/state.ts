// Host state to bytes and back. The host side of a simulation is a graph of plain objects, class
// instances, arrays, Maps, Sets, bigints and typed arrays, with shared references (a process is in
// the OS's list and in a CPU's `running` slot) and cycles. This encodes such a graph as JSON with
// explicit references, and rebuilds it with the same sharing and the same prototypes, so methods
// work on the restored objects. Class instances are recreated without running their constructors
// (Object.create + field assignment), so constructors' side effects on the machine are not repeated.
// Objects the caller names as external (the Machine, whose state is saved separately) are written
// as placeholders and bound to the caller's replacements on decode.

export class StateError extends Error {}

type Encoded = unknown;
// biome-ignore lint/suspicious/noExplicitAny: constructors of arbitrary host classes
export type ClassRegistry = ReadonlyMap<string, abstract new (...args: any[]) => unknown>;

const TYPED_ARRAYS = {
  Uint8Array,
  Uint16Array,
  Uint32Array,
  Int8Array,
  Int16Array,
  Int32Array,
  Float32Array,
  Float64Array,
  BigUint64Array,
  BigInt64Array,
} as const;
type TypedArrayName = keyof typeof TYPED_ARRAYS;

function typedArrayName(value: object): TypedArrayName | undefined {
  for (const name of Object.keys(TYPED_ARRAYS) as TypedArrayName[]) {
    if (value instanceof TYPED_ARRAYS[name]) return name;
  }
  return undefined;
}

/**
 * Encodes `root`. `externals` maps objects to names written in their place; `classes` lists the
 * classes whose instances may appear, under the names the state records them by. Those are the
 * registry's, not the classes' own: a bundler may rename a class (the CLI bundle's `Controller` is
 * `_Controller`), and a checkpoint must read back whatever code wrote it. Throws StateError naming
 * the path of anything that cannot be restored faithfully: a function, an unregistered class, a
 * symbol key.
 */
export function encodeState(root: unknown, classes: ClassRegistry, externals: Map<object, string>): string {
  const names = new Map<object, string>();
  for (const [name, registered] of classes) names.set(registered.prototype, name);
  const ids = new Map<object, number>();
  const encode = (value: unknown, path: string): Encoded => {
    switch (typeof value) {
      case "undefined":
        return { u: 1 };
      case "number":
        if (Number.isFinite(value)) return Object.is(value, -0) ? { n: "-0" } : value;
        return { n: String(value) };
      case "string":
      case "boolean":
        return value;
      case "bigint":
        return { b: value.toString(16) };
      case "function":
        throw new StateError(`${path} is a function; its closure cannot be saved`);
      case "symbol":
        throw new StateError(`${path} is a symbol`);
    }
    if (value === null) return null;
    const object = value as object;
    const external = externals.get(object);
    if (external !== undefined) return { x: external };
    const seen = ids.get(object);
    if (seen !== undefined) return { r: seen };
    const id = ids.size;
    ids.set(object, id);
    if (Array.isArray(object)) {
      const items: Encoded[] = [];
      for (let i = 0; i < object.length; i++) {
        items.push(i in object ? encode(object[i], `${path}[${i}]`) : { h: 1 });
      }
      return { i: id, a: items };
    }
    if (object instanceof Map) {
      let index = 0;
      const entries: Encoded[] = [];
      for (const [key, entry] of object) {
        entries.push([encode(key, `${path}.key#${index}`), encode(entry, `${path}.get(${String(key)})`)]);
        index++;
      }
      return { i: id, M: entries };
    }
    if (object instanceof Set) {
      let index = 0;
      const items: Encoded[] = [];
      for (const item of object) items.push(encode(item, `${path}.item#${index++}`));
      return { i: id, S: items };
    }
    const typed = typedArrayName(object);
    if (typed) {
      const view = object as Uint8Array;
      const bytes = Buffer.from(view.buffer, view.byteOffset, view.byteLength);
      return { i: id, t: typed, d: bytes.toString("base64") };
    }
    if (ArrayBuffer.isView(object) || object instanceof ArrayBuffer || object instanceof Promise) {
      throw new StateError(`${path} is a ${object.constructor.name}, which is not saved`);
    }
    if (Object.getOwnPropertySymbols(object).length > 0) {
      throw new StateError(`${path} has symbol-keyed properties`);
    }
    const prototype = Object.getPrototypeOf(object);
    let className: string | undefined;
    if (prototype !== Object.prototype && prototype !== null) {
      className = names.get(prototype);
      if (className === undefined) {
        const name = prototype.constructor?.name as string;
        throw new StateError(`${path} is an instance of ${name}, which checkpoints do not know`);
      }
    }
    const fields: Record<string, Encoded> = {};
    for (const key of Object.keys(object)) {
      fields[key] = encode((object as Record<string, unknown>)[key], `${path}.${key}`);
    }
    return className ? { i: id, c: className, o: fields } : { i: id, o: fields };
  };
  return JSON.stringify(encode(root, "state"));
}

/** Rebuilds what encodeState wrote; `externals` maps the placeholder names to objects. */
export function decodeState(text: string, classes: ClassRegistry, externals: Map<string, object>): unknown {
  const objects = new Map<number, unknown>();
  const decode = (value: Encoded): unknown => {
    if (value === null || typeof value !== "object") return value;
    if (Array.isArray(value)) return value.map(decode);
    const node = value as Record<string, unknown>;
    if ("u" in node) return undefined;
    if ("n" in node) return node.n === "-0" ? -0 : Number(node.n);
    if ("b" in node) return BigInt(`0x${node.b as string}`);
    if ("x" in node) {
      const external = externals.get(node.x as string);
      if (!external) throw new StateError(`no object for the external reference ${String(node.x)}`);
      return external;
    }
    if ("r" in node) {
      if (!objects.has(node.r as number)) throw new StateError(`dangling reference ${String(node.r)}`);
      return objects.get(node.r as number);
    }
    const id = node.i as number;
    if ("a" in node) {
      const items = node.a as Encoded[];
      const array: unknown[] = new Array(items.length);
      objects.set(id, array);
      items.forEach((item, i) => {
        if (item !== null && typeof item === "object" && "h" in (item as object)) return;
        array[i] = decode(item);
      });
      return array;
    }
    if ("M" in node) {
      const map = new Map();
      objects.set(id, map);
      for (const [key, entry] of node.M as [Encoded, Encoded][]) map.set(decode(key), decode(entry));
      return map;
    }
    if ("S" in node) {
      const set = new Set();
      objects.set(id, set);
      for (const item of node.S as Encoded[]) set.add(decode(item));
      return set;
    }
    if ("t" in node) {
      const bytes = Buffer.from(node.d as string, "base64");
      const Type = TYPED_ARRAYS[node.t as TypedArrayName];
      const copy = new Uint8Array(bytes.length);
      copy.set(bytes);
      const array = new Type(copy.buffer, 0, bytes.length / Type.BYTES_PER_ELEMENT);
      objects.set(id, array);
      return array;
    }
    let object: Record<string, unknown>;
    if (node.c !== undefined) {
      const type = classes.get(node.c as string);
      if (!type)
        throw new StateError(`the checkpoint holds a ${String(node.c)}, which this memvirt does not know`);
      object = Object.create(type.prototype);
    } else {
      object = {};
    }
    objects.set(id, object);
    for (const [key, field] of Object.entries(node.o as Record<string, Encoded>)) object[key] = decode(field);
    return object;
  };
  return decode(JSON.parse(text));
}
