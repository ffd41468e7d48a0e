// The IOMMU of docs/MODEL.md §13, written from that text alone and independently of the core (plain
// TypeScript, bigint addresses, maps instead of linear memory). The differential tests run the same
// tables and requests through both and compare every outcome and counter.

export type RefIommuKind = "none" | "vtd" | "amdvi";

export interface RefGeometry {
  entries: number;
  ways: number;
  policy: "lru" | "fifo";
}

export interface RefIommuConfig {
  kind: RefIommuKind;
  supportedAw: number[];
  largePages: { "2M": boolean; "1G": boolean };
  snoopControl: boolean;
  memoryTop: bigint;
  maxPhyAddr: number;
  iotlb: (RefGeometry & { latency: number }) | null;
  contextCache: RefGeometry | null;
  psc?: RefGeometry | null;
  faultRecords: number;
  llc: { size: number; ways: number; latency: number } | null;
  dramLatency: number;
}

export interface RefDmaRequest {
  sid: number;
  address: bigint;
  write: boolean;
  length?: number;
  pasid?: number;
  translated?: boolean;
  data?: bigint;
}

export interface RefDmaResult {
  status: number;
  hpa: bigint;
  data: bigint;
}

/** Cause codes (§13.2-13.5): the VT-d reasons, then pasidEntry, illegalDeviceTableEntry, pageNotPresent. */
export const CAUSE = {
  rootNotPresent: 1,
  contextNotPresent: 2,
  invalidContext: 3,
  addressBeyondWidth: 4,
  noWrite: 5,
  noRead: 6,
  entryAccessFailed: 7,
  rootAccessFailed: 8,
  contextAccessFailed: 9,
  rootReserved: 0xa,
  contextReserved: 0xb,
  entryReserved: 0xc,
  translationTypeBlocked: 0xd,
  pasidEntry: 0xe,
  illegalDeviceTableEntry: 0xf,
  pageNotPresent: 0x10,
} as const;
const CAUSE_NAMES = Object.fromEntries(Object.entries(CAUSE).map(([k, v]) => [v, k])) as Record<
  number,
  string
>;

export const STATUS_BAD = 0xff;
export const STATUS_UNSUPPORTED = 0xfe;

const MASK = 0x000f_ffff_ffff_f000n;
const U64 = (1n << 64n) - 1n;
const bit = (x: bigint, n: number) => (x >> BigInt(n)) & 1n;
const field = (x: bigint, hi: number, lo: number) =>
  Number((x >> BigInt(lo)) & ((1n << BigInt(hi - lo + 1)) - 1n));

/** A set-associative array with the §6.3 rules (match-overwrite, lowest invalid, smallest stamp). */
class Sets<T> {
  private readonly sets: ({ key: string; stamp: number; value: T } | null)[][];
  private clock = 0;
  constructor(readonly geometry: RefGeometry) {
    this.sets = Array.from({ length: geometry.entries / geometry.ways }, () =>
      Array(geometry.ways).fill(null),
    );
  }
  get setCount(): number {
    return this.sets.length;
  }
  find(set: number, key: string): T | undefined {
    for (const way of this.sets[set]) {
      if (way && way.key === key) {
        if (this.geometry.policy === "lru") way.stamp = ++this.clock;
        return way.value;
      }
    }
    return undefined;
  }
  insert(set: number, key: string, value: T): void {
    const ways = this.sets[set];
    let index = ways.findIndex((w) => w?.key === key);
    if (index < 0) index = ways.indexOf(null);
    if (index < 0) {
      index = 0;
      for (let i = 1; i < ways.length; i++) if ((ways[i]?.stamp ?? 0) < (ways[index]?.stamp ?? 0)) index = i;
    }
    ways[index] = { key, stamp: ++this.clock, value };
  }
  remove(predicate: (value: T) => boolean): void {
    for (const ways of this.sets)
      for (let i = 0; i < ways.length; i++)
        if (ways[i] && predicate((ways[i] as { value: T }).value)) ways[i] = null;
  }
}

interface Context {
  domain: number;
  kind: "second" | "first" | "nested" | "passthrough" | "amdWalk" | "amdUntranslated" | "amdNoTable";
  root: bigint;
  levels: number;
  nestedRoot: bigint;
  nestedLevels: number;
  fpd: boolean;
  ir: boolean;
  iw: boolean;
  ats: boolean;
  sid: number;
  pasid: number | undefined;
}

interface PscEntry {
  domain: number;
  requester: number;
  level: number;
  next: bigint;
  nextLevel: number;
  read: boolean;
  write: boolean;
  user: boolean;
}

/** A directory entry a walk read: its level, the table it leads to, and the rights through it. */
interface DirectoryRead {
  level: number;
  next: bigint;
  nextLevel: number;
  read: boolean;
  write: boolean;
  user: boolean;
}

interface IotlbEntry {
  domain: number;
  requester: number;
  base: bigint;
  shift: number;
  frame: bigint;
  read: boolean;
  write: boolean;
}

class Fault {
  constructor(
    readonly cause: number,
    readonly present: boolean,
  ) {}
}

export class RefIommu {
  private readonly memory = new Map<bigint, bigint>();
  private readonly llc: Sets<true> | null;
  private readonly iotlb: Sets<IotlbEntry> | null;
  private readonly contexts: Sets<Context> | null;
  private readonly psc: Sets<PscEntry> | null;
  private readonly addressReserved: bigint;
  root = 0n;
  faultStatus = 0;
  status = 0;
  readonly records: { lo: bigint; hi: bigint }[];
  private queue = { base: 0n, entries: 0, head: 0 };
  private events = { base: 0n, entries: 0, head: 0, tail: 0 };
  readonly counters = {
    translations: 0,
    iotlb: { hits: 0, misses: 0 },
    contextCache: { hits: 0, misses: 0 },
    psc: { hits: 0, misses: 0 },
    walks: 0,
    walkRefs: 0,
    contextRefs: 0,
    untranslated: 0,
    bytes: 0,
    cycles: 0,
    faults: {} as Record<string, number>,
    faultsRecorded: 0,
    faultOverflows: 0,
    invalidations: {} as Record<string, number>,
    adUpdates: 0,
    llcHits: 0,
    dram: 0,
  };

  constructor(readonly config: RefIommuConfig) {
    this.llc = config.llc
      ? new Sets({ entries: config.llc.size / 64, ways: config.llc.ways, policy: "lru" })
      : null;
    this.iotlb = config.iotlb ? new Sets(config.iotlb) : null;
    this.contexts = config.contextCache ? new Sets(config.contextCache) : null;
    this.psc = config.psc ? new Sets(config.psc) : null;
    this.addressReserved = ((1n << 52n) - 1n) & ~((1n << BigInt(config.maxPhyAddr)) - 1n);
    this.records = Array.from({ length: config.faultRecords }, () => ({ lo: 0n, hi: 0n }));
  }

  // --- memory -----------------------------------------------------------------------------------------
  write64(pa: bigint, value: bigint): void {
    this.memory.set(pa & ~7n, value & U64);
  }
  read64(pa: bigint): bigint {
    return this.memory.get(pa & ~7n) ?? 0n;
  }

  /** §13.7: a reference priced by the LLC alone. */
  private price(pa: bigint): number {
    const line = pa >> 6n;
    if (!this.llc || !this.config.llc) {
      this.counters.dram++;
      return this.config.dramLatency;
    }
    const set = Number(line & BigInt(this.llc.setCount - 1));
    if (this.llc.find(set, line.toString()) !== undefined) {
      this.counters.llcHits++;
      return this.config.llc.latency;
    }
    this.llc.insert(set, line.toString(), true);
    this.counters.dram++;
    return this.config.dramLatency;
  }

  // --- registers ----------------------------------------------------------------------------------------
  setQueue(base: bigint, entries: number): void {
    this.queue = { base, entries, head: 0 };
  }
  setEventLog(base: bigint, entries: number): void {
    this.events = { base, entries, head: 0, tail: 0 };
  }
  get queueHead(): number {
    return this.queue.head;
  }
  get eventTail(): number {
    return this.events.tail;
  }

  // --- translation -----------------------------------------------------------------------------------------
  dma(request: RefDmaRequest): RefDmaResult {
    const length = request.length ?? 8;
    // The data field keeps the request's data unless a read with data completes.
    const given = request.data ?? 0n;
    if (Number(request.address & 0xfffn) + length > 4096) return { status: STATUS_BAD, hpa: 0n, data: given };
    let hpa: bigint;
    if (this.config.kind === "none") {
      this.counters.untranslated++;
      hpa = request.address;
    } else {
      this.counters.translations++;
      const cycles = { n: this.config.iotlb?.latency ?? 0 };
      try {
        hpa = this.translate(request, cycles);
      } catch (error) {
        if (!(error instanceof Fault)) throw error;
        this.counters.cycles += cycles.n;
        return { status: error.cause, hpa: 0n, data: given };
      } finally {
        void 0;
      }
      this.counters.cycles += cycles.n;
    }
    const top = this.config.memoryTop;
    if (hpa >= top || hpa + BigInt(length) > top || hpa >> BigInt(this.config.maxPhyAddr) !== 0n)
      return { status: STATUS_UNSUPPORTED, hpa, data: given };
    this.counters.bytes += length;
    let data = 0n;
    if (request.data !== undefined) {
      if (request.write) {
        for (let q = hpa & ~7n; q < hpa + BigInt(length); q += 8n) this.write64(q, request.data);
      } else data = this.read64(hpa);
    }
    return { status: 0, hpa, data: request.data !== undefined && !request.write ? data : given };
  }

  private get scalable(): boolean {
    return this.config.kind === "vtd" && bit(this.root, 10) === 1n;
  }

  private fault(
    cause: number,
    present: boolean,
    request: RefDmaRequest,
    context: { fpd: boolean; domain: number },
  ): never {
    const name = CAUSE_NAMES[cause];
    this.counters.faults[name] = (this.counters.faults[name] ?? 0) + 1;
    if (this.config.kind === "amdvi") {
      let code = 2n;
      if (cause === CAUSE.illegalDeviceTableEntry) code = 1n;
      else if (cause === CAUSE.contextAccessFailed) code = 3n;
      else if (cause === CAUSE.entryAccessFailed) code = 4n;
      let flags = (request.write ? 0x20n : 0n) | (request.translated ? 0x100n : 0n);
      if (code === 2n) flags |= (present ? 0x10n : 0n) | (cause === CAUSE.entryReserved ? 0x80n : 0n);
      this.event(
        BigInt(request.sid) | (BigInt(context.domain) << 32n) | (flags << 48n) | (code << 60n),
        request.address,
      );
    } else if (!context.fpd && this.records.length > 0) {
      const index = (this.faultStatus >> 8) & 0xff;
      const record = this.records[index];
      if (bit(record.hi, 63) === 1n) {
        this.faultStatus |= 1;
        this.counters.faultOverflows++;
      } else {
        let hi =
          BigInt(request.sid) | (BigInt(cause === CAUSE.pasidEntry ? 0x58 : cause) << 32n) | (1n << 63n);
        if (request.pasid !== undefined) hi |= (1n << 31n) | (BigInt(request.pasid & 0xfffff) << 40n);
        if (request.translated) hi |= 2n << 60n;
        if (!request.write) hi |= 1n << 62n;
        record.lo = request.address & ~0xfffn;
        record.hi = hi;
        this.faultStatus = (this.faultStatus & ~0xff00) | (((index + 1) % this.records.length) << 8) | 2;
        this.counters.faultsRecorded++;
      }
    }
    throw new Fault(cause, present);
  }

  private event(q0: bigint, q1: bigint): void {
    const { base, entries, head, tail } = this.events;
    if (entries === 0) return;
    if ((tail + 1) % entries === head) {
      this.status |= 1;
      this.counters.faultOverflows++;
      return;
    }
    this.write64(base + BigInt(tail) * 16n, q0);
    this.write64(base + BigInt(tail) * 16n + 8n, q1);
    this.events.tail = (tail + 1) % entries;
    this.counters.faultsRecorded++;
  }

  clearRecord(index: number): void {
    const record = this.records[index];
    if (!record) return;
    record.hi &= ~(1n << 63n);
    const pending = this.records.some((r) => bit(r.hi, 63) === 1n);
    this.faultStatus = pending ? this.faultStatus | 2 : this.faultStatus & ~2;
  }

  private translate(request: RefDmaRequest, cycles: { n: number }): bigint {
    const perPasid = this.scalable && request.pasid !== undefined;
    const key = perPasid
      ? 1n | (BigInt(request.sid) << 1n) | (1n << 17n) | (BigInt(request.pasid as number) << 18n)
      : 1n | (BigInt(request.sid) << 1n);
    let context: Context | undefined;
    let set = 0;
    if (this.contexts) {
      set = Number(((key >> 1n) ^ (key >> 18n)) & BigInt(this.contexts.setCount - 1));
      context = this.contexts.find(set, key.toString());
    }
    if (context) this.counters.contextCache.hits++;
    else {
      this.counters.contextCache.misses++;
      const partial = { fpd: false, domain: 0 };
      const reference = (pa: bigint) => {
        this.counters.contextRefs++;
        cycles.n += this.price(pa);
      };
      const resolved = this.resolve(request, partial, reference);
      if (typeof resolved === "number") this.fault(resolved, false, request, partial);
      context = resolved;
      this.contexts?.insert(set, key.toString(), context);
    }
    const ctx = context;
    if (request.translated) {
      if (!ctx.ats) this.fault(CAUSE.translationTypeBlocked, true, request, ctx);
      this.counters.untranslated++;
      return request.address;
    }
    if (ctx.kind === "passthrough") {
      this.counters.untranslated++;
      return request.address;
    }
    if (ctx.kind === "amdNoTable") this.fault(CAUSE.invalidContext, false, request, ctx);
    if (ctx.kind === "amdUntranslated") {
      if (request.write ? !ctx.iw : !ctx.ir)
        this.fault(request.write ? CAUSE.noWrite : CAUSE.noRead, true, request, ctx);
      this.counters.untranslated++;
      return request.address;
    }
    if (ctx.levels < 6 && request.address >> BigInt(12 + 9 * ctx.levels) !== 0n)
      this.fault(CAUSE.addressBeyondWidth, false, request, ctx);
    const requester = this.scalable ? (0x8000_0000 | (ctx.pasid as number)) >>> 0 : request.sid;
    if (this.iotlb) {
      for (const [size, shift] of [
        [0, 12],
        [1, 21],
        [2, 30],
      ]) {
        const vpn = request.address >> BigInt(shift);
        const s = Number(vpn & BigInt(this.iotlb.setCount - 1));
        const hit = this.iotlb.find(s, `${vpn}:${size}:${ctx.domain}:${requester}`);
        if (hit) {
          if (request.write ? hit.write : hit.read) {
            this.counters.iotlb.hits++;
            return hit.frame | (request.address & ((1n << BigInt(shift)) - 1n));
          }
          break;
        }
      }
      this.counters.iotlb.misses++;
    }
    this.counters.walks++;
    const refs = { n: 0 };
    let walked: { frame: bigint; shift: number; read: boolean; write: boolean };
    const usePsc = this.psc !== null && ctx.kind !== "nested";
    let start: PscEntry | undefined;
    if (usePsc && this.psc) {
      for (let level = 2; level <= ctx.levels && !start; level++) {
        const prefix = request.address >> BigInt(12 + 9 * (level - 1));
        start = this.psc.find(
          Number((prefix + BigInt(level + ctx.domain)) & BigInt(this.psc.setCount - 1)),
          `${prefix}:${level}:${ctx.domain}:${requester}`,
        );
      }
      if (start) this.counters.psc.hits++;
      else this.counters.psc.misses++;
      if (start) {
        const low = 12 + 9 * start.nextLevel;
        const high = 12 + 9 * (start.level - 1);
        if (((request.address >> BigInt(low)) & ((1n << BigInt(high - low)) - 1n)) !== 0n)
          this.fault(CAUSE.pageNotPresent, false, request, ctx);
      }
    }
    const directories: DirectoryRead[] = [];
    try {
      walked = this.walk(ctx, request.address, request.write, refs, cycles, start, directories);
    } catch (error) {
      this.counters.walkRefs += refs.n;
      if (error instanceof Fault) this.fault(error.cause, error.present, request, ctx);
      throw error;
    }
    this.counters.walkRefs += refs.n;
    if (ctx.kind === "amdWalk") {
      walked.read &&= ctx.ir;
      walked.write &&= ctx.iw;
      if (request.write ? !walked.write : !walked.read)
        this.fault(request.write ? CAUSE.noWrite : CAUSE.noRead, true, request, ctx);
    }
    if (usePsc && this.psc) {
      for (const d of directories) {
        const prefix = request.address >> BigInt(12 + 9 * (d.level - 1));
        this.psc.insert(
          Number((prefix + BigInt(d.level + ctx.domain)) & BigInt(this.psc.setCount - 1)),
          `${prefix}:${d.level}:${ctx.domain}:${requester}`,
          {
            domain: ctx.domain,
            requester,
            ...d,
          },
        );
      }
    }
    if (this.iotlb) {
      const size = walked.shift >= 30 ? 2 : walked.shift >= 21 ? 1 : 0;
      const shift = 12 + 9 * size;
      const vpn = request.address >> BigInt(shift);
      const frame =
        (walked.frame | (request.address & ((1n << BigInt(walked.shift)) - 1n))) &
        ~((1n << BigInt(shift)) - 1n);
      this.iotlb.insert(
        Number(vpn & BigInt(this.iotlb.setCount - 1)),
        `${vpn}:${size}:${ctx.domain}:${requester}`,
        {
          domain: ctx.domain,
          requester,
          base: vpn << BigInt(shift),
          shift,
          frame,
          read: walked.read,
          write: walked.write,
        },
      );
    }
    return walked.frame | (request.address & ((1n << BigInt(walked.shift)) - 1n));
  }

  /** §13.2. Returns the context or a cause; `partial` collects FPD and the domain as they are read. */
  private resolve(
    request: RefDmaRequest,
    partial: { fpd: boolean; domain: number },
    reference: (pa: bigint) => void,
  ): Context | number {
    const top = this.config.memoryTop;
    const reserved = this.addressReserved;
    const sid = request.sid;
    const make = (c: Partial<Context> & Pick<Context, "kind" | "domain">): Context => ({
      root: 0n,
      levels: 0,
      nestedRoot: 0n,
      nestedLevels: 0,
      fpd: partial.fpd,
      ir: false,
      iw: false,
      ats: false,
      sid,
      pasid: undefined,
      ...c,
    });
    const aw = (value: number) => this.config.supportedAw.includes(value);
    if (this.config.kind === "amdvi") {
      const at = (this.root & MASK) + BigInt(sid) * 32n;
      if (at >= top) return CAUSE.contextAccessFailed;
      const q0 = this.read64(at);
      const q1 = this.read64(at + 8n);
      reference(at);
      if (bit(q0, 0) === 0n) return make({ kind: "passthrough", domain: 0 });
      const domain = field(q1, 15, 0);
      partial.domain = domain;
      const flags = { ir: bit(q0, 61) === 1n, iw: bit(q0, 62) === 1n, ats: bit(q1, 32) === 1n };
      if (bit(q0, 1) === 0n) return make({ kind: "amdNoTable", domain, ...flags });
      if ((q0 & 0x1fcn) !== 0n || bit(q0, 63) === 1n || (q0 & reserved) !== 0n)
        return CAUSE.illegalDeviceTableEntry;
      const mode = field(q0, 11, 9);
      if (mode === 7) return CAUSE.illegalDeviceTableEntry;
      if (mode === 0) return make({ kind: "amdUntranslated", domain, ...flags });
      return make({ kind: "amdWalk", domain, root: q0 & MASK, levels: mode, ...flags });
    }
    const bus = sid >> 8;
    const devfn = sid & 0xff;
    const rootAt = (this.root & MASK) + BigInt(bus) * 16n;
    if (rootAt >= top) return CAUSE.rootAccessFailed;
    const lo = this.read64(rootAt);
    const hi = this.read64(rootAt + 8n);
    reference(rootAt);
    if (!this.scalable) {
      if (bit(lo, 0) === 0n) return CAUSE.rootNotPresent;
      if ((lo & 0xffen) !== 0n || (lo & reserved) !== 0n || hi !== 0n) return CAUSE.rootReserved;
      const at = (lo & MASK) + BigInt(devfn) * 16n;
      if (at >= top) return CAUSE.contextAccessFailed;
      const clo = this.read64(at);
      const chi = this.read64(at + 8n);
      reference(at);
      if (bit(clo, 0) === 0n) return CAUSE.contextNotPresent;
      partial.fpd = bit(clo, 1) === 1n;
      partial.domain = field(chi, 23, 8);
      if ((clo & 0xff0n) !== 0n || (clo & reserved) !== 0n || (chi & 0xffff_ffff_ff00_00f8n) !== 0n)
        return CAUSE.contextReserved;
      const tt = field(clo, 3, 2);
      if (tt === 3) return CAUSE.invalidContext;
      const ats = tt === 1;
      if (tt === 2) return make({ kind: "passthrough", domain: partial.domain, ats });
      const width = field(chi, 2, 0);
      if (!aw(width)) return CAUSE.invalidContext;
      return make({ kind: "second", domain: partial.domain, root: clo & MASK, levels: width + 2, ats });
    }
    const half = devfn < 128 ? lo : hi;
    if (bit(half, 0) === 0n) return CAUSE.rootNotPresent;
    if ((half & 0xffen) !== 0n || (half & reserved) !== 0n) return CAUSE.rootReserved;
    const at = (half & MASK) + BigInt(devfn & 0x7f) * 32n;
    if (at >= top) return CAUSE.contextAccessFailed;
    const [q0, q1, q2, q3] = [0n, 8n, 16n, 24n].map((o) => this.read64(at + o));
    reference(at);
    if (bit(q0, 0) === 0n) return CAUSE.contextNotPresent;
    partial.fpd = bit(q0, 1) === 1n;
    if ((q0 & 0x1e0n) !== 0n || (q0 & reserved) !== 0n || q1 >> 20n !== 0n || q2 !== 0n || q3 !== 0n)
      return CAUSE.contextReserved;
    if (request.pasid !== undefined && bit(q0, 3) === 0n) return CAUSE.invalidContext;
    const pasid = request.pasid !== undefined ? request.pasid & 0xfffff : field(q1, 19, 0);
    if (pasid >> 6 >= 2 ** (field(q0, 11, 9) + 7)) return CAUSE.pasidEntry;
    const dirAt = (q0 & MASK) + BigInt(pasid >> 6) * 8n;
    if (dirAt >= top) return CAUSE.pasidEntry;
    const de = this.read64(dirAt);
    reference(dirAt);
    if (bit(de, 0) === 0n) return CAUSE.pasidEntry;
    if (bit(de, 1) === 1n) partial.fpd = true;
    if ((de & 0xffcn) !== 0n || (de & reserved) !== 0n) return CAUSE.pasidEntry;
    const peAt = (de & MASK) + BigInt(pasid & 63) * 64n;
    if (peAt >= top) return CAUSE.pasidEntry;
    const [p0, p1, p2] = [0n, 8n, 16n].map((o) => this.read64(peAt + o));
    reference(peAt);
    if (bit(p0, 0) === 0n) return CAUSE.pasidEntry;
    if (bit(p0, 1) === 1n) partial.fpd = true;
    partial.domain = field(p1, 15, 0);
    if (
      (p0 & 0xe00n) !== 0n ||
      (p0 & reserved) !== 0n ||
      p1 >> 16n !== 0n ||
      (p2 & 0xff3n) !== 0n ||
      (p2 & reserved) !== 0n
    )
      return CAUSE.pasidEntry;
    const pgtt = field(p0, 8, 6);
    const flpm = field(p2, 3, 2);
    const width = field(p0, 4, 2);
    if ((pgtt === 1 || pgtt === 3) && flpm > 1) return CAUSE.pasidEntry;
    if ((pgtt === 2 || pgtt === 3) && !aw(width)) return CAUSE.pasidEntry;
    const common = { domain: partial.domain, ats: bit(q0, 2) === 1n, pasid, fpd: partial.fpd };
    const firstLevels = flpm === 0 ? 4 : 5;
    if (pgtt === 1) return make({ kind: "first", root: p2 & MASK, levels: firstLevels, ...common });
    if (pgtt === 2) return make({ kind: "second", root: p0 & MASK, levels: width + 2, ...common });
    if (pgtt === 3)
      return make({
        kind: "nested",
        root: p2 & MASK,
        levels: firstLevels,
        nestedRoot: p0 & MASK,
        nestedLevels: width + 2,
        ...common,
      });
    if (pgtt === 4) return make({ kind: "passthrough", ...common });
    return CAUSE.pasidEntry;
  }

  /** §13.4. Throws a Fault; counts references in `refs`. */
  private walk(
    ctx: Context,
    address: bigint,
    write: boolean,
    refs: { n: number },
    cycles: { n: number },
    start?: PscEntry,
    directories?: DirectoryRead[],
  ): { frame: bigint; shift: number; read: boolean; write: boolean } {
    if (ctx.kind === "nested") {
      const first = this.walkOne("first", ctx.root, ctx.levels, address, write, refs, cycles, (gpa) => {
        const t = this.walkOne("second", ctx.nestedRoot, ctx.nestedLevels, gpa, false, refs, cycles);
        return t.frame | (gpa & ((1n << BigInt(t.shift)) - 1n));
      });
      const gpa = first.frame | (address & ((1n << BigInt(first.shift)) - 1n));
      const second = this.walkOne("second", ctx.nestedRoot, ctx.nestedLevels, gpa, write, refs, cycles);
      const shift = Math.min(first.shift, second.shift);
      const hpa = second.frame | (gpa & ((1n << BigInt(second.shift)) - 1n));
      return {
        frame: hpa & ~((1n << BigInt(shift)) - 1n),
        shift,
        read: first.read && second.read,
        write: first.write && second.write,
      };
    }
    const format = ctx.kind === "amdWalk" ? "amd" : ctx.kind;
    return this.walkOne(
      format as "second" | "first" | "amd",
      start ? start.next : ctx.root,
      start ? start.nextLevel : ctx.levels,
      address,
      write,
      refs,
      cycles,
      undefined,
      start,
      directories,
    );
  }

  private walkOne(
    format: "second" | "first" | "amd",
    root: bigint,
    levels: number,
    address: bigint,
    write: boolean,
    refs: { n: number },
    cycles: { n: number },
    tableAddress?: (gpa: bigint) => bigint,
    start?: { read: boolean; write: boolean; user: boolean },
    directories?: DirectoryRead[],
  ): { frame: bigint; shift: number; read: boolean; write: boolean } {
    const reserved = this.addressReserved;
    const missing = format === "amd" ? CAUSE.pageNotPresent : write ? CAUSE.noWrite : CAUSE.noRead;
    let base = root & MASK;
    let level = levels;
    let read = start ? start.read : true;
    let writable = start ? start.write : true;
    let user = start ? start.user : true;
    const read_: { at: bigint; value: bigint }[] = [];
    let entry = 0n;
    let shift = 12;
    for (;;) {
      const entryShift = 12 + 9 * (level - 1);
      let at = base + ((address >> BigInt(entryShift)) & 0x1ffn) * 8n;
      if (tableAddress) at = tableAddress(at);
      if (at >= this.config.memoryTop) throw new Fault(CAUSE.entryAccessFailed, false);
      entry = this.read64(at);
      refs.n++;
      cycles.n += this.price(at);
      if (format === "second") {
        if ((entry & 3n) === 0n) throw new Fault(missing, false);
        const ps = bit(entry, 7) === 1n;
        let bad = (entry & reserved) !== 0n || (bit(entry, 11) === 1n && !this.config.snoopControl);
        if (ps && level >= 4) bad = true;
        if (ps && level === 3 && (!this.config.largePages["1G"] || (entry & 0x3fff_f000n) !== 0n)) bad = true;
        if (ps && level === 2 && (!this.config.largePages["2M"] || (entry & 0x1f_f000n) !== 0n)) bad = true;
        if (level > 1 && !ps && (entry & 0x78n) !== 0n) bad = true;
        if (bad) throw new Fault(CAUSE.entryReserved, true);
        read &&= bit(entry, 0) === 1n;
        writable &&= bit(entry, 1) === 1n;
        if (level === 1 || ps) {
          shift = entryShift;
          break;
        }
        directories?.push({ level, next: entry & MASK, nextLevel: level - 1, read, write: writable, user });
      } else if (format === "first") {
        read_.push({ at, value: entry });
        if (bit(entry, 0) === 0n) throw new Fault(missing, false);
        const ps = bit(entry, 7) === 1n;
        let bad = (entry & reserved) !== 0n;
        if (level >= 2 && ps) {
          if (level >= 4) bad = true;
          else if (level === 3) bad ||= !this.config.largePages["1G"] || (entry & 0x3fff_e000n) !== 0n;
          else bad ||= (entry & 0x1f_e000n) !== 0n;
        }
        if (bad) throw new Fault(CAUSE.entryReserved, true);
        writable &&= bit(entry, 1) === 1n;
        user &&= bit(entry, 2) === 1n;
        if (level === 1 || ps) {
          shift = entryShift;
          break;
        }
        directories?.push({ level, next: entry & MASK, nextLevel: level - 1, read, write: writable, user });
      } else {
        if (bit(entry, 0) === 0n) throw new Fault(missing, false);
        if ((entry & 0x07f0_0000_0000_0000n) !== 0n || (entry & reserved) !== 0n)
          throw new Fault(CAUSE.entryReserved, true);
        read &&= bit(entry, 61) === 1n;
        writable &&= bit(entry, 62) === 1n;
        const next = field(entry, 11, 9);
        if (next === 0) {
          shift = entryShift;
          break;
        }
        if (next === 7) {
          let zero = 12;
          while (bit(entry | 0xfffn, zero) === 1n) zero++;
          const size = zero + 1;
          if (size <= entryShift || size >= entryShift + 9) throw new Fault(CAUSE.entryReserved, true);
          shift = size;
          break;
        }
        if (next >= level) throw new Fault(CAUSE.entryReserved, true);
        const low = 12 + 9 * next;
        if (((address >> BigInt(low)) & ((1n << BigInt(entryShift - low)) - 1n)) !== 0n)
          throw new Fault(missing, false);
        directories?.push({ level, next: entry & MASK, nextLevel: next, read, write: writable, user });
        base = entry & MASK;
        level = next;
        continue;
      }
      base = entry & MASK;
      level--;
    }
    if (!user) {
      read = false;
      writable = false;
    }
    if (write ? !writable : !read) throw new Fault(write ? CAUSE.noWrite : CAUSE.noRead, true);
    if (format === "first") {
      const allAccessed = read_.every((r) => bit(r.value, 5) === 1n);
      if (!allAccessed || (write && bit(entry, 6) === 0n)) {
        read_.forEach((r, i) => {
          let updated = r.value | 0x20n;
          if (i === read_.length - 1 && write) updated |= 0x40n;
          if (updated !== r.value) {
            this.write64(r.at, updated);
            this.counters.adUpdates++;
            cycles.n += this.price(r.at);
          }
        });
      }
    }
    return { frame: entry & MASK & ~((1n << BigInt(shift)) - 1n), shift, read, write: writable };
  }

  // --- invalidation -------------------------------------------------------------------------------
  /** Consumes queue entries up to `tail` (§13.6); false when one was rejected. */
  processQueue(tail: number): boolean {
    const { base, entries } = this.queue;
    while (this.queue.head !== tail % entries) {
      const at = base + BigInt(this.queue.head) * 16n;
      const q0 = this.read64(at);
      const q1 = this.read64(at + 8n);
      const type = this.config.kind === "amdvi" ? this.amdCommand(q0, q1) : this.vtdDescriptor(q0, q1);
      if (type === undefined) {
        this.count("rejected");
        if (this.config.kind === "amdvi") this.event(5n << 60n, at);
        else this.faultStatus |= 16;
        return false;
      }
      this.count(type);
      this.queue.head = (this.queue.head + 1) % entries;
    }
    return true;
  }

  private count(type: string): void {
    this.counters.invalidations[type] = (this.counters.invalidations[type] ?? 0) + 1;
  }

  private dropIotlb(filter: (e: IotlbEntry) => boolean, base?: bigint, size?: bigint): void {
    this.iotlb?.remove(
      (e) =>
        filter(e) &&
        (base === undefined ||
          size === undefined ||
          (e.base < base + size && e.base + (1n << BigInt(e.shift)) > base)),
    );
  }

  private vtdDescriptor(q0: bigint, q1: bigint): string | undefined {
    const type = field(q0, 3, 0);
    const g = field(q0, 5, 4);
    const did = field(q0, 31, 16);
    const am = field(q1, 5, 0);
    const block = 1n << BigInt(12 + am);
    const start = q1 & ~0xfffn & ~(block - 1n);
    if (type === 1) {
      if (g === 1) this.contexts?.remove(() => true);
      else if (g === 2) this.contexts?.remove((c) => c.domain === did);
      else if (g === 3) {
        const sid = field(q0, 47, 32);
        const fm = field(q0, 49, 48);
        const ignore = (7 << (3 - fm)) & 7;
        this.contexts?.remove((c) => (c.sid & ~ignore) === (sid & ~ignore));
      } else return undefined;
      return ["", "contextGlobal", "contextDomain", "contextDevice"][g];
    }
    if (type === 2) {
      if (g === 1) {
        this.dropIotlb(() => true);
        this.psc?.remove(() => true);
      } else if (g === 2) {
        this.dropIotlb((e) => e.domain === did);
        this.psc?.remove((e) => e.domain === did);
      } else if (g === 3) {
        if (am > 18) return undefined;
        this.dropIotlb((e) => e.domain === did, start, block);
        if (bit(q1, 6) === 0n) this.psc?.remove((e) => e.domain === did);
      } else return undefined;
      return ["", "iotlbGlobal", "iotlbDomain", "iotlbPage"][g];
    }
    if (type === 5) {
      if (bit(q0, 5) === 1n) {
        const at = q1 & ~3n;
        const old = this.read64(at);
        const shift = (at & 4n) * 8n;
        this.write64(at, (old & ~(0xffff_ffffn << shift)) | ((q0 >> 32n) << shift));
      }
      return "wait";
    }
    if (type === 6) {
      const requester = (0x8000_0000 | field(q0, 51, 32)) >>> 0;
      if (g === 2) {
        this.dropIotlb((e) => e.domain === did && e.requester === requester);
        this.psc?.remove((e) => e.domain === did && e.requester === requester);
      } else if (g === 3) {
        if (am > 18) return undefined;
        this.dropIotlb((e) => e.domain === did && e.requester === requester, start, block);
        if (bit(q1, 6) === 0n) this.psc?.remove((e) => e.domain === did && e.requester === requester);
      } else return undefined;
      return "pasidIotlb";
    }
    if (type === 7) {
      const pasid = field(q0, 51, 32);
      if (g === 0) this.contexts?.remove((c) => c.domain === did);
      else if (g === 1) this.contexts?.remove((c) => c.domain === did && c.pasid === pasid);
      else if (g === 3) this.contexts?.remove(() => true);
      else return undefined;
      return "pasidCache";
    }
    return undefined;
  }

  private amdCommand(q0: bigint, q1: bigint): string | undefined {
    const opcode = field(q0, 63, 60);
    if (opcode === 1) {
      if (bit(q0, 0) === 1n) this.write64(q0 & 0x000f_ffff_ffff_fff8n, q1);
      if (bit(q0, 1) === 1n) this.status |= 4;
      return "wait";
    }
    if (opcode === 2) {
      const sid = field(q0, 15, 0);
      this.contexts?.remove((c) => c.sid === sid);
      return "deviceTableEntry";
    }
    if (opcode === 3) {
      const domain = field(q0, 47, 32);
      const address = q1 & ~0xfffn;
      if (bit(q1, 1) === 1n) this.psc?.remove((e) => e.domain === domain);
      if (bit(q1, 0) === 0n) this.dropIotlb((e) => e.domain === domain, address, 4096n);
      else {
        let zero = 12;
        while (zero < 64 && bit(address | 0xfffn, zero) === 1n) zero++;
        if (zero >= 63) this.dropIotlb((e) => e.domain === domain);
        else {
          const size = 1n << BigInt(zero + 1);
          this.dropIotlb((e) => e.domain === domain, address & ~(size - 1n), size);
        }
      }
      return "iommuPages";
    }
    if (opcode === 8) {
      this.contexts?.remove(() => true);
      this.iotlb?.remove(() => true);
      this.psc?.remove(() => true);
      return "invalidateAll";
    }
    return undefined;
  }
}
