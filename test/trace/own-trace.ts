// Test helper: writes memvirt-format traces of given records, e.g. random accesses over a large
// footprint on several CPUs, which the text fixtures (one CPU, one program) cannot give.
import { writeFileSync } from "node:fs";
import { ownFormatHeader } from "../../src/trace/convert.js";

export interface TestRecord {
  address: bigint;
  kind: 0 | 1 | 2;
  cpu?: number;
  size?: number;
}

export function ownTraceBytes(records: readonly TestRecord[]): Buffer {
  const body = Buffer.alloc(records.length * 16);
  records.forEach((record, i) => {
    body.writeBigUInt64LE(record.address, i * 16);
    body.writeUInt8(record.kind, i * 16 + 8);
    body.writeUInt8(record.size ?? 8, i * 16 + 9);
    body.writeUInt16LE(record.cpu ?? 0, i * 16 + 10);
    body.writeUInt32LE(i + 1, i * 16 + 12);
  });
  return Buffer.concat([Buffer.from(ownFormatHeader()), body]);
}

export function writeOwnTrace(path: string, records: readonly TestRecord[]): void {
  writeFileSync(path, ownTraceBytes(records));
}

/**
 * `count` accesses: a quarter writes, a tenth fetches, over `pages` 4K pages of a 64 GiB range
 * (sparse, so many page tables), spread over `cpus` CPUs; seeded xorshift, so every run is the same.
 */
export function randomRecords(count: number, pages: number, cpus: number, seed = 12345): TestRecord[] {
  let state = BigInt(seed) | 1n;
  const next = () => {
    state ^= (state << 13n) & 0xffff_ffff_ffff_ffffn;
    state ^= state >> 7n;
    state ^= (state << 17n) & 0xffff_ffff_ffff_ffffn;
    return state;
  };
  const records: TestRecord[] = [];
  for (let i = 0; i < count; i++) {
    const r = next();
    const page = (r >> 8n) % BigInt(pages);
    const choice = Number(r & 0xffn);
    const kind = choice < 64 ? 1 : choice < 90 ? 2 : 0;
    records.push({
      address: 0x10_0000_0000n + page * 0x4000_1000n + ((r >> 40n) & 0xff8n),
      kind: kind as 0 | 1 | 2,
      cpu: Number((r >> 32n) % BigInt(cpus)),
    });
  }
  return records;
}
