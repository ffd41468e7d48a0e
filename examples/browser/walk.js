// One 4-level walk, the README's first example: PML4 at 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT
// 0x4000, whose entry 1 maps linear 0x1000-0x1fff to frame 0x9000. Returns what the read of 0x1234 gave.
import { AccessKind } from "memvirt";

export function fourLevelWalk(machine) {
  machine.writePhys64(0x1000n, 0x2000n | 7n);
  machine.writePhys64(0x2000n, 0x3000n | 7n);
  machine.writePhys64(0x3000n, 0x4000n | 7n);
  machine.writePhys64(0x4000n + 8n, 0x9000n | 7n);
  machine.setRegs(0, { cr0: 0x80010001n, cr3: 0x1000n, cr4: 0x20n, efer: 0xd00n, cpl: 3 });
  const result = machine.translate(0, 0x1234n, AccessKind.Read);
  return { fault: result.fault, pa: `0x${result.pa.toString(16)}`, refs: result.refs, cycles: result.cycles };
}
