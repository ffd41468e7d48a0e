// Page contents without the bytes. Sharing, compression and swap decide by what a page holds, not by
// where it is, so each 4 KiB page carries a compact descriptor: a content class, a 64-bit fingerprint
// standing in for the bytes (equal fingerprints = equal pages, as KSM's memcmp would find), and the
// size the page compresses to. Only page tables need real bytes, and the core holds those.

/** Content classes a workload declares for its memory. */
export type ContentClass = "zero" | "fill" | "image" | "heap" | "random";
export const CONTENT_CLASSES: readonly ContentClass[] = ["zero", "fill", "image", "heap", "random"];

export interface PageContent {
  cls: ContentClass;
  /** Equal fingerprints mean equal bytes. A fill page's fingerprint is its fill value. */
  fingerprint: bigint;
  /** Bytes after compression (a same-filled page compresses to its value alone: 8 bytes). */
  compressedSize: number;
}

export const PAGE_BYTES = 4096;
const MASK64 = (1n << 64n) - 1n;

/** splitmix64 finaliser: a well-mixed 64-bit value from any 64-bit input. */
export function mix64(value: bigint): bigint {
  let z = (value + 0x9e3779b97f4a7c15n) & MASK64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return z ^ (z >> 31n);
}

/** A fingerprint from a list of small integers (class tag, image, VM, page, generation). */
export function fingerprintOf(...parts: (number | bigint)[]): bigint {
  let h = 0x6a09e667f3bcc908n;
  for (const part of parts) h = mix64(h ^ BigInt(part));
  return h;
}

/** The zero page: what a frame holds after scrubbing, and what a fresh host page reads as. */
export const ZERO_CONTENT: PageContent = Object.freeze({ cls: "zero", fingerprint: 0n, compressedSize: 8 });

/** Whether the page is one repeated word (zswap's same-filled pages, KSM's zero pages when zero). */
export function isSameFilled(content: PageContent): boolean {
  return content.cls === "zero" || content.cls === "fill";
}

/**
 * Heap pages compress about 2-3x (docs/overcommit.md §Published savings): the size is drawn uniformly from
 * [4096/3, 4096/2] by the fingerprint, so the same bytes always compress to the same size.
 */
function heapSize(fingerprint: bigint): number {
  const low = Math.ceil(PAGE_BYTES / 3);
  const high = PAGE_BYTES / 2;
  return low + Number(fingerprint % BigInt(high - low + 1));
}

/**
 * Random data does not compress: lz4/lzo/zstd emit a little more than the input (block headers),
 * so it is above zswap's 2990-byte acceptance limit.
 */
const RANDOM_SIZE = PAGE_BYTES + 16;

/** The content of a page holding `fingerprint` in class `cls`. */
export function makeContent(cls: ContentClass, fingerprint: bigint): PageContent {
  switch (cls) {
    case "zero":
      return ZERO_CONTENT;
    case "fill":
      return { cls, fingerprint, compressedSize: 8 };
    case "image":
    case "heap":
      return { cls, fingerprint, compressedSize: heapSize(fingerprint) };
    case "random":
      return { cls, fingerprint, compressedSize: RANDOM_SIZE };
  }
}

/** Page `page` of OS image `image`: identical in every VM booted from that image. */
export function imageContent(image: number, page: number): PageContent {
  return makeContent("image", fingerprintOf(1, image, page));
}

/**
 * What a store leaves in a page of class `cls`. Zero and fill pages are rewritten with the value they
 * hold, so they keep their fingerprint; any other store makes bytes no other page has, identified by
 * the writer (`vm`, `page`) and a per-run store sequence number.
 */
export function afterWrite(
  cls: ContentClass,
  fillValue: bigint,
  vm: number,
  page: bigint,
  sequence: number,
): PageContent {
  if (cls === "zero") return ZERO_CONTENT;
  if (cls === "fill") return makeContent("fill", fillValue);
  // An image page written by its VM stops being the image: it becomes private heap-like data.
  const written: ContentClass = cls === "image" ? "heap" : cls;
  return makeContent(written, fingerprintOf(2, vm, page, sequence));
}
