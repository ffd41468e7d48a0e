// Seeded synthetic workloads: access streams with known locality, written as the same 16-byte
// records the trace parsers produce, so they run through the core without a trace file.
//
// Every record is an 8-byte, 8-byte-aligned data access at base + offset, offset < footprint; kind is
// WRITE with probability writeFraction, else READ; cpu = spec.cpu; source line 0. A workload is a pure
// function of its spec: the same spec (seed included) gives the same bytes, however `fill` is batched.

export const WORKLOAD_NAMES = ["sequential", "strided", "uniform", "zipf", "pointer-chase"] as const;
export type WorkloadName = (typeof WORKLOAD_NAMES)[number];

export interface WorkloadSpec {
  name: WorkloadName;
  /** Total records to produce. */
  records: number;
  /** Bytes of address space touched, from `base`; a multiple of 8. */
  footprint: number;
  /** First linear address; default DEFAULT_BASE. */
  base?: bigint;
  /** Bytes between consecutive accesses, a multiple of 8: default 64 (sequential), 4096 (strided). */
  stride?: number;
  /** Zipf exponent, >= 0; default 0.99. */
  zipfS?: number;
  /** Share of writes, 0..1; default 0.3. */
  writeFraction?: number;
  seed: number;
  /** 0..65535; default 0. */
  cpu?: number;
}

export interface WorkloadOptions {
  /**
   * Largest line count for which pointer-chase stores an explicit random cycle (4 bytes a line);
   * above it, it walks a full-period LCG instead. Default 2^24 lines (a 1 GiB footprint, 64 MiB of
   * table). Tests lower it to exercise the LCG path.
   */
  permutationLimit?: number;
}

export interface Workload {
  /** Writes up to `maxRecords` records (and no more than `out` holds) from offset 0 of `out`;
   *  returns how many, 0 once the workload is exhausted. */
  fill(out: DataView, maxRecords: number): number;
}

/** A canonical user-space address, clear of the null page and of typical program images. */
export const DEFAULT_BASE = 0x10000000n;
export const DEFAULT_ZIPF_S = 0.99;
export const DEFAULT_WRITE_FRACTION = 0.3;

const RECORD_BYTES = 16;
const ACCESS_BYTES = 8;
const LINE_BYTES = 64;
const PAGE_BYTES = 4096;
const KIND_READ = 0;
const KIND_WRITE = 1;
const TWO_POW_32 = 4294967296;
const TWO_POW_53 = 9007199254740992;
const DEFAULT_PERMUTATION_LIMIT = 1 << 24;
/** Zipf's page permutation remembers images up to this many pages (4 MiB of memo). */
const PERMUTATION_MEMO_LIMIT = 1 << 20;
/** Pointer-chase's LCG runs modulo 2^k with k <= 32 (32-bit multiplies): 2^32 lines = 256 GiB. */
const MAX_CHASE_LINES = TWO_POW_32;

/** murmur3's 32-bit finaliser: a bijection on 32-bit values that mixes every input bit. */
function mix32(value: number): number {
  let mixed = value | 0;
  mixed = Math.imul(mixed ^ (mixed >>> 16), 0x85ebca6b);
  mixed = Math.imul(mixed ^ (mixed >>> 13), 0xc2b2ae35);
  return (mixed ^ (mixed >>> 16)) >>> 0;
}

/**
 * xoshiro128** (Blackman and Vigna): 128 bits of state, period 2^128 - 1, all in 32-bit integer
 * operations, which V8 keeps unboxed. The state is seeded from both 32-bit halves of the seed through
 * a splitmix-style Weyl sequence, so nearby seeds give unrelated streams and the state is never all
 * zero. Math.random is not used: it cannot be seeded.
 */
class Random {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    const low = seed >>> 0;
    const high = Math.floor(seed / TWO_POW_32) >>> 0;
    let weyl = mix32(low ^ mix32(high ^ 0x6a09e667));
    const next = (): number => {
      weyl = (weyl + 0x9e3779b9) | 0;
      return mix32(weyl);
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Uniform 32-bit unsigned integer. */
  nextUint32(): number {
    const s1 = this.s1;
    const result = Math.imul(rotateLeft(Math.imul(s1, 5), 7), 9) >>> 0;
    const shifted = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= s1;
    this.s1 = s1 ^ this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= shifted;
    this.s3 = rotateLeft(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  nextDouble(): number {
    return ((this.nextUint32() >>> 5) * 67108864 + (this.nextUint32() >>> 6)) / TWO_POW_53;
  }

  /** Uniform integer in [0, bound), bound <= 2^53. */
  below(bound: number): number {
    return Math.floor(this.nextDouble() * bound);
  }
}

function rotateLeft(value: number, bits: number): number {
  return (value << bits) | (value >>> (32 - bits));
}

/** Produces the next offset into the footprint. */
type OffsetSource = () => number;

function sequentialOffsets(footprint: number, stride: number): OffsetSource {
  let offset = 0;
  return () => {
    const current = offset;
    offset += stride;
    if (offset + ACCESS_BYTES > footprint) offset = 0;
    return current;
  };
}

/**
 * Strided walk with wrap-around. Each pass starts one page plus one line further on (modulo the
 * stride) than the previous one, so a stride of several pages reaches every page over successive
 * passes and a one-page stride moves to a new cache line of every page.
 */
function stridedOffsets(footprint: number, stride: number): OffsetSource {
  const passShift = PAGE_BYTES + LINE_BYTES;
  let passStart = 0;
  let offset = 0;
  return () => {
    const current = offset;
    offset += stride;
    if (offset + ACCESS_BYTES > footprint) {
      passStart = (passStart + passShift) % stride;
      if (passStart + ACCESS_BYTES > footprint) passStart %= footprint;
      offset = passStart;
    }
    return current;
  };
}

function uniformOffsets(footprint: number, random: Random): OffsetSource {
  const slots = footprint / ACCESS_BYTES;
  return () => random.below(slots) * ACCESS_BYTES;
}

/**
 * Zipf(exponent) ranks 1..count by rejection-inversion (Hörmann and Derflinger 1996, as in Apache
 * Commons RNG): exact, O(1) memory and expected O(1) time, so footprints of any size need no CDF table.
 */
class ZipfSampler {
  private readonly hIntegralX1: number;
  private readonly hIntegralCount: number;
  private readonly squeeze: number;

  constructor(
    private readonly count: number,
    private readonly exponent: number,
  ) {
    this.hIntegralX1 = this.hIntegral(1.5) - 1;
    this.hIntegralCount = this.hIntegral(count + 0.5);
    this.squeeze = 2 - this.hIntegralInverse(this.hIntegral(2.5) - this.h(2));
  }

  sample(random: Random): number {
    for (;;) {
      const u = this.hIntegralCount + random.nextDouble() * (this.hIntegralX1 - this.hIntegralCount);
      const x = this.hIntegralInverse(u);
      let rank = Math.floor(x + 0.5);
      if (rank < 1) rank = 1;
      else if (rank > this.count) rank = this.count;
      if (rank - x <= this.squeeze || u >= this.hIntegral(rank + 0.5) - this.h(rank)) return rank;
    }
  }

  private h(x: number): number {
    return Math.exp(-this.exponent * Math.log(x));
  }

  private hIntegral(x: number): number {
    const logX = Math.log(x);
    return expm1OverX((1 - this.exponent) * logX) * logX;
  }

  private hIntegralInverse(x: number): number {
    let t = x * (1 - this.exponent);
    if (t < -1) t = -1; // rounding can push t just below the domain of log1p
    return Math.exp(log1pOverX(t) * x);
  }
}

/** log1p(x) / x, continuous at 0 (the exponent-1 case). */
function log1pOverX(x: number): number {
  return Math.abs(x) > 1e-8 ? Math.log1p(x) / x : 1 - x * (0.5 - x * (1 / 3 - 0.25 * x));
}

/** expm1(x) / x, continuous at 0. */
function expm1OverX(x: number): number {
  return Math.abs(x) > 1e-8 ? Math.expm1(x) / x : 1 + x * 0.5 * (1 + (x / 3) * (1 + 0.25 * x));
}

/**
 * A keyed pseudo-random permutation of [0, count): a 4-round Feistel network on the smallest even
 * bit width that covers count, with cycle-walking to stay below count (expected < 4 rounds since
 * count > width/4). O(1) memory, so zipf can scatter the hot pages of a footprint of any size.
 */
function feistelPermutation(count: number, random: Random): (index: number) => number {
  let halfBits = 1;
  while (2 ** (2 * halfBits) < count) halfBits++;
  const halfSize = 2 ** halfBits;
  const halfMask = halfSize - 1;
  const [k0, k1, k2, k3] = [
    random.nextUint32(),
    random.nextUint32(),
    random.nextUint32(),
    random.nextUint32(),
  ];
  const round = (left: number, right: number, key: number): number =>
    (left ^ (mix32(right ^ key) & halfMask)) >>> 0;
  const encrypt = (value: number): number => {
    const l0 = Math.floor(value / halfSize);
    const r0 = value % halfSize;
    const r1 = round(l0, r0, k0);
    const r2 = round(r0, r1, k1);
    const r3 = round(r1, r2, k2);
    return r3 * halfSize + round(r2, r3, k3);
  };
  const permute = (index: number): number => {
    let value = encrypt(index);
    while (value >= count) value = encrypt(value);
    return value;
  };
  if (count > PERMUTATION_MEMO_LIMIT) return permute;
  // Hot ranks come back again and again: each index's image is worked out once (0: not yet, else image + 1).
  const memo = new Uint32Array(count);
  return (index) => {
    const known = memo[index];
    if (known !== 0) return known - 1;
    const value = permute(index);
    memo[index] = value + 1;
    return value;
  };
}

/**
 * Zipf over the footprint's pages, hottest rank first, scattered by a random permutation so that hot
 * pages are not neighbours; uniform 8-byte slot within the page (a trailing partial page included).
 */
function zipfOffsets(footprint: number, exponent: number, random: Random): OffsetSource {
  const pages = Math.ceil(footprint / PAGE_BYTES);
  const sampler = new ZipfSampler(pages, exponent);
  const permute = feistelPermutation(pages, random);
  return () => {
    const page = permute(sampler.sample(random) - 1);
    const pageStart = page * PAGE_BYTES;
    const pageBytes = Math.min(PAGE_BYTES, footprint - pageStart);
    return pageStart + random.below(pageBytes / ACCESS_BYTES) * ACCESS_BYTES;
  };
}

/**
 * Pointer chase over the footprint's 64-byte lines: each access goes to the line the previous one
 * "points" to, following one random cycle through every line, so each line is visited exactly once per
 * `lines` accesses and nothing is predictable from address arithmetic.
 *
 * Up to `permutationLimit` lines the cycle is drawn uniformly by Sattolo's algorithm into a
 * Uint32Array. Beyond that a table would not fit comfortably, so the cycle is a full-period LCG modulo
 * 2^k >= lines (Hull-Dobell: c odd, a = 1 mod 4), tempered by an xorshift (a bijection, so still a
 * single cycle) to hide the LCG's short-period low bits, and cycle-walked to skip values >= lines.
 * That cycle is far from uniform, but still defeats prefetchers and visits every line once per period.
 */
function pointerChaseOffsets(footprint: number, random: Random, permutationLimit: number): OffsetSource {
  const lines = Math.floor(footprint / LINE_BYTES);
  if (lines <= permutationLimit) {
    const next = new Uint32Array(lines);
    for (let line = 0; line < lines; line++) next[line] = line;
    for (let index = lines - 1; index > 0; index--) {
      const other = random.below(index);
      const swap = next[index];
      next[index] = next[other];
      next[other] = swap;
    }
    let line = random.below(lines);
    return () => {
      const current = line;
      line = next[line];
      return current * LINE_BYTES;
    };
  }

  let bits = 2;
  while (2 ** bits < lines) bits++;
  const mask = bits === 32 ? 0xffffffff : 2 ** bits - 1;
  const temperShift = bits >>> 1;
  let multiplier = ((random.nextUint32() << 2) | 1) & mask;
  if (multiplier === 1) multiplier = 5;
  const increment = (random.nextUint32() | 1) & mask;
  let state = random.nextUint32() & mask;
  const step = (): number => {
    for (;;) {
      state = ((Math.imul(multiplier, state) + increment) & mask) >>> 0;
      const line = (state ^ (state >>> temperShift)) >>> 0;
      if (line < lines) return line;
    }
  };
  return () => step() * LINE_BYTES;
}

function requireMultipleOf8(name: string, value: number, minimum: number): void {
  if (!Number.isSafeInteger(value) || value < minimum || value % ACCESS_BYTES !== 0) {
    throw new RangeError(`${name} must be a multiple of 8 of at least ${minimum}, got ${value}`);
  }
}

export function createWorkload(spec: WorkloadSpec, options: WorkloadOptions = {}): Workload {
  const { name, records, footprint, seed } = spec;
  if (!WORKLOAD_NAMES.includes(name)) throw new RangeError(`unknown workload ${String(name)}`);
  if (!Number.isSafeInteger(records) || records < 0) {
    throw new RangeError(`records must be a non-negative integer, got ${records}`);
  }
  requireMultipleOf8("footprint", footprint, name === "pointer-chase" ? LINE_BYTES : ACCESS_BYTES);
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
  const base = spec.base ?? DEFAULT_BASE;
  if (base < 0n || base + BigInt(footprint) > 1n << 64n) {
    throw new RangeError("base + footprint must fit in 64 bits");
  }
  const writeFraction = spec.writeFraction ?? DEFAULT_WRITE_FRACTION;
  if (!(writeFraction >= 0 && writeFraction <= 1)) {
    throw new RangeError(`writeFraction must be in [0, 1], got ${writeFraction}`);
  }
  const cpu = spec.cpu ?? 0;
  if (!Number.isInteger(cpu) || cpu < 0 || cpu > 0xffff)
    throw new RangeError(`cpu must be 0..65535, got ${cpu}`);
  const zipfS = spec.zipfS ?? DEFAULT_ZIPF_S;
  if (!(zipfS >= 0 && Number.isFinite(zipfS))) throw new RangeError(`zipfS must be >= 0, got ${zipfS}`);
  const permutationLimit = options.permutationLimit ?? DEFAULT_PERMUTATION_LIMIT;

  const random = new Random(seed);
  let nextOffset: OffsetSource;
  switch (name) {
    case "sequential":
    case "strided": {
      const stride = spec.stride ?? (name === "sequential" ? LINE_BYTES : PAGE_BYTES);
      requireMultipleOf8("stride", stride, ACCESS_BYTES);
      nextOffset =
        name === "sequential" ? sequentialOffsets(footprint, stride) : stridedOffsets(footprint, stride);
      break;
    }
    case "uniform":
      nextOffset = uniformOffsets(footprint, random);
      break;
    case "zipf":
      nextOffset = zipfOffsets(footprint, zipfS, random);
      break;
    case "pointer-chase":
      if (footprint / LINE_BYTES > MAX_CHASE_LINES) {
        throw new RangeError("pointer-chase footprint must be at most 256 GiB");
      }
      nextOffset = pointerChaseOffsets(footprint, random, permutationLimit);
      break;
  }

  // The address is added in 32-bit halves: a BigInt per record would dominate the cost.
  const baseLow = Number(base & 0xffffffffn);
  const baseHigh = Number(base >> 32n);
  // writeFraction 1 gives 2^32, above every draw; 0 gives 0, below none.
  const writeThreshold = writeFraction * TWO_POW_32;
  const attributes = (ACCESS_BYTES << 8) | (cpu << 16);
  let remaining = records;

  return {
    fill(out: DataView, maxRecords: number): number {
      const count = Math.max(0, Math.min(maxRecords, remaining, Math.floor(out.byteLength / RECORD_BYTES)));
      for (let index = 0; index < count; index++) {
        const offset = nextOffset();
        const kind = random.nextUint32() < writeThreshold ? KIND_WRITE : KIND_READ;
        const low = baseLow + (offset % TWO_POW_32);
        const high = baseHigh + Math.floor(offset / TWO_POW_32) + (low >= TWO_POW_32 ? 1 : 0);
        const position = index * RECORD_BYTES;
        out.setUint32(position, low >>> 0, true);
        out.setUint32(position + 4, high >>> 0, true);
        out.setUint32(position + 8, kind | attributes, true);
        out.setUint32(position + 12, 0, true);
      }
      remaining -= count;
      return count;
    },
  };
}
