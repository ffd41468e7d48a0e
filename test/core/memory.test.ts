import { describe, expect, it } from "vitest";
import { defaultConfig } from "../../src/config/config.js";
import * as L from "../../src/core/layout.js";
import { Machine, MemvirtError } from "../../src/core/machine.js";
import type { MachineConfig } from "../../src/core/types.js";

const MiB = 1024 * 1024;

function small(): MachineConfig {
  const machine = defaultConfig().machine;
  machine.tlb = {
    l1d: { arrays: [{ sizes: ["4K"], entries: 64, ways: 4, policy: "lru" }], latency: 1 },
    l1i: null,
    l2: null,
  };
  machine.psc = { pml5: null, pml4: null, pdpte: null, pde: null, latency: 1 };
  machine.cache = { l1: null, l2: null, llc: null, dramLatency: 100 };
  return machine;
}

const heapTop = (machine: Machine) =>
  new DataView(machine.memory.buffer).getUint32(L.CTRL_BASE + L.CFG_HEAP_TOP, true);

describe("the core's memory is sized from its configuration and grows on demand", () => {
  it("a 64-entry TLB takes 2 KiB: the sized regions of a small machine end a few KiB above the fixed ones", () => {
    const machine = new Machine(small());
    const used = heapTop(machine) - L.HEAP_BASE;
    // The per-CPU memos, the first frame directory and the TLB array: 16 + 4 + 16 + 2 KiB.
    expect(used).toBeLessThan(64 * 1024);
    expect(machine.memory.byteLength).toBeLessThanOrEqual(8 * MiB);
  });

  it("a larger cache model takes a larger region, placed above the fixed regions", () => {
    const config = small();
    config.cache = {
      l1: null,
      l2: null,
      llc: { size: 8 * MiB, ways: 16, latency: 40 },
      dramLatency: 100,
    };
    const machine = new Machine(config);
    // 8 MiB of 64-byte lines, 16 bytes of model state each.
    expect(heapTop(machine) - L.HEAP_BASE).toBeGreaterThanOrEqual(2 * MiB);
    const llc = L.CTRL_BASE + L.CFG_CACHE_DESC + L.CacheLevel.Llc * L.CACHE_DESC_SIZE;
    expect(new DataView(machine.memory.buffer).getUint32(llc + L.CD_BASE, true)).toBeGreaterThanOrEqual(
      L.HEAP_BASE,
    );
  });

  it("the text and DMA buffers exist only once asked for", () => {
    const machine = new Machine(small());
    const before = heapTop(machine);
    const text = machine.textBuffer();
    expect(text.byteOffset).toBeGreaterThanOrEqual(before);
    expect(text.byteLength).toBe(L.TEXT_SIZE);
    expect(machine.textBuffer().byteOffset).toBe(text.byteOffset);
    const dma = machine.dmaBuffer();
    expect(dma.byteOffset).toBeGreaterThanOrEqual(text.byteOffset + L.TEXT_SIZE);
  });

  it("the frame directory doubles as frames are backed, and every frame reads back across the growths", () => {
    const machine = new Machine(small(), { backedFramesLog2: 14 });
    const view = () => new DataView(machine.memory.buffer);
    const capacity = () => 2 ** view().getUint32(L.CTRL_BASE + L.CFG_DIR_LOG2, true);
    expect(capacity()).toBe(2 ** L.DIR_FIRST_LOG2);
    const frames = 3000;
    for (let i = 0; i < frames; i++) machine.writePhys64(BigInt(i) * 0x1_0000n + 8n, BigInt(i + 1));
    expect(capacity()).toBe(4096);
    expect(machine.backedFrames()).toBe(frames);
    for (let i = 0; i < frames; i++)
      expect(machine.readPhys64(BigInt(i) * 0x1_0000n + 8n)).toBe(BigInt(i + 1));
    // The old tables' pages became free frames, which later frames took before new memory: the regions
    // hold less than the memos, the TLB array, the three tables and the frames took one by one.
    const tables = (2 ** 10 + 2 ** 11 + 2 ** 12) * L.DIR_ENTRY_SIZE;
    const memos = 2 * L.MEMO_SLOTS * L.MEMO_SIZE + L.LINE_MEMO_SLOTS * 4;
    const tlb = 64 * L.TLB_ENTRY_SIZE;
    expect(heapTop(machine) - L.HEAP_BASE).toBeLessThan(memos + tlb + tables + frames * 4096);
  });

  it("a directory at its configured capacity is full: 3/4 of 2^backedFramesLog2 frames", () => {
    const machine = new Machine(small(), { backedFramesLog2: 8 });
    for (let i = 0; i < 192; i++) machine.writePhys64(BigInt(i) * 0x1000n, 1n);
    expect(() => machine.writePhys64(192n * 0x1000n, 1n)).toThrow(/directory full/);
  });

  it("a checkpoint taken by a core with another memory layout is refused, and nothing changes", () => {
    const machine = new Machine(small());
    machine.writePhys64(0x1000n, 7n);
    const state = machine.saveCoreState();
    const copy = { ...state, globals: state.globals.slice(), pages: state.pages.map((p) => ({ ...p })) };
    new DataView(copy.globals.buffer).setUint32(0, L.CORE_LAYOUT_VERSION + 1, true);
    const other = new Machine(small());
    expect(() => other.restoreCoreState(copy)).toThrow(MemvirtError);
    expect(other.readPhys64(0x1000n)).toBe(0n);
    other.restoreCoreState(state);
    expect(other.readPhys64(0x1000n)).toBe(7n);
  });
});
