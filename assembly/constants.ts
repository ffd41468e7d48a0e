// The one map of linear memory, and the codes the core and the host exchange through it. This file is
// the only copy: scripts/generate-layout.mjs writes the host's src/core/layout.ts from it at build
// time (every exported integer constant and `const enum`, with its comment). The regions below
// HEAP_BASE are fixed; every other region is sized from the configuration and allocated above it
// (heap.ts) when the machine is configured or first needs it, so linear memory is as large as the
// machine asks. The core reports where each sized region is (the CFG_* words, descriptors' bases),
// and the host builds its views from that.

/**
 * The memory layout's version: a checkpoint (snapshot.ts) saved by a core with another layout is
 * refused. Raise it whenever a region, a descriptor or a lasting global moves.
 */
export const CORE_LAYOUT_VERSION: u32 = 3;
/** Bytes of the block the core's lasting globals are copied to for a checkpoint (snapshot.ts). */
export const SNAPSHOT_SCRATCH_SIZE: u32 = 256;

/** AssemblyScript puts its static data below this; the core never allocates on its heap. */
export const STATIC_END: u32 = 0x10000;

// --- control block: configuration words, per-CPU registers, the exit record ---------------------
export const CTRL_BASE: u32 = 0x10000;
export const CTRL_SIZE: u32 = 0x10000;

/** Global configuration words (u32 unless noted), offsets from CTRL_BASE. */
export const CFG_CPUS: u32 = 0x00;
export const CFG_MAXPHYADDR: u32 = 0x04;
export const CFG_GBPAGES: u32 = 0x08;
export const CFG_PSC_LATENCY: u32 = 0x0c;
export const CFG_DRAM_LATENCY: u32 = 0x10;
/** log2 of the frame directory's capacity now, and the most it may grow to (memory.backedFramesLog2). */
export const CFG_DIR_LOG2: u32 = 0x14;
export const CFG_DIR_MAX_LOG2: u32 = 0x18;
export const CFG_MEM_LIMIT_PAGES: u32 = 0x1c;

/**
 * Memory generation (u64): advanced by every store into host memory, so memos of what memory held
 * (NESTED_MEMO) know when they are stale. In linear memory, not a global, so a saved and restored
 * core keeps its memos and their generation in step.
 */
export const CFG_MEMORY_GENERATION: u32 = 0x28;
/** EPT execute-only translations supported (IA32_VMX_EPT_VPID_CAP bit 0): 1, or 0 when 100b is a misconfiguration. */
export const CFG_EPT_EXECUTE_ONLY: u32 = 0x30;
/** Cache levels: 3 descriptors (l1, l2, llc) of CACHE_DESC_SIZE bytes. */
export const CFG_CACHE_DESC: u32 = 0x40;
export const CACHE_DESC_SIZE: u32 = 32;
// cache descriptor fields
export const CD_PRESENT: u32 = 0;
export const CD_SETS_LOG2: u32 = 4;
export const CD_WAYS: u32 = 8;
export const CD_LATENCY: u32 = 12;
/** Address of the level's array (per-CPU levels: of CPU 0's). */
export const CD_BASE: u32 = 16;
/** Bytes between CPUs' copies (0 for the shared LLC). */
export const CD_CPU_STRIDE: u32 = 20;
/** Where the sized regions are (heap.ts): the top of them (memory above has never been used), the
 *  frame directory, and the text and DMA buffers (0 until first asked for). */
export const CFG_HEAP_TOP: u32 = 0xa0;
export const CFG_DIR_BASE: u32 = 0xa4;
export const CFG_TEXT_BASE: u32 = 0xa8;
export const CFG_DMA_BASE: u32 = 0xac;
/** The demand-paging region (DM_*), allocated when the host first publishes to it (0 until then). */
export const CFG_DEMAND_BASE: u32 = 0xb0;

/** Per-CPU blocks. */
export const CPU_BASE: u32 = 0x1000;
export const CPU_STRIDE: u32 = 0x400;
export const MAX_CPUS: u32 = 16;
// register offsets inside a CPU block (u64 each)
export const R_CR0: u32 = 0x00;
export const R_CR3: u32 = 0x08;
export const R_CR4: u32 = 0x10;
export const R_EFER: u32 = 0x18;
export const R_PKRU: u32 = 0x20;
export const R_PKRS: u32 = 0x28;
export const R_RFLAGS: u32 = 0x30;
export const R_CPL: u32 = 0x38;
/** Derived from the registers whenever one changes: the M_* bits below. */
export const R_MODE: u32 = 0x40;
/** Current PCID (CR3[11:0] with CR4.PCIDE, else 0). */
export const R_PCID: u32 = 0x44;
/** Tag of the virtual context (VPID/ASID and nested root) the CPU runs in; 0 natively. */
export const R_VMTAG: u32 = 0x48;
/** Nonzero when some paging-structure cache of the CPU is present, so walks without any skip them. */
export const R_PSC_ANY: u32 = 0x4c;
/** The nested dimension (NestedMode). */
export const R_NESTED_MODE: u32 = 0x50;
/** Nested paging levels (4 or 5). */
export const R_NESTED_LEVELS: u32 = 0x54;
/** EPTP, or nCR3 for NPT (u64). */
export const R_NESTED_ROOT: u32 = 0x58;
/** Tag of the nested root (EP4TA / nCR3) for guest-physical TLB and PSC entries. */
export const R_ROOT_TAG: u32 = 0x60;
/** VPID (EPT) or ASID (NPT); 0 is the host. */
export const R_VPID: u32 = 0x64;
/** Nonzero when the nested dimension keeps accessed/dirty flags (EPTP bit 6; always for NPT). */
export const R_NESTED_AD: u32 = 0x68;
/** Nonzero when some nested paging-structure cache is present. */
export const R_NPSC_ANY: u32 = 0x6c;
/** Nonzero while the CPU runs a guest (set by vmEnter), so VM transitions know to flush VPID 0. */
export const R_IN_GUEST: u32 = 0x70;
/** The PML index (a 16-bit VMCS guest-state field): the next log entry to write, 511 down to 0. */
export const R_PML_INDEX: u32 = 0x74;
/** The PML address (4 KiB-aligned host-physical, u64) with bit 0 set while "enable PML" is 1; 0 when off. */
export const R_PML: u32 = 0x78;
/** Entries of the page-modification log (SDM 29.3.6): one 4 KiB page of 64-bit guest-physical addresses. */
export const PML_ENTRIES: u32 = 512;
/** The nested dimension a CPU translates guest-physical addresses through (R_NESTED_MODE). */
export const enum NestedMode {
  /** Native, shadow or paravirtual paging: the hardware walks the tables CR3 names. */
  None = 0,
  Ept = 1,
  Npt = 2,
}
/** How many nested modes there are: vmEnter refuses codes at or above it. */
export const NESTED_MODE_COUNT: u32 = 3;
// mode bits
export const M_USER: u32 = 1 << 0;
export const M_WP: u32 = 1 << 1;
export const M_SMEP: u32 = 1 << 2;
export const M_SMAP: u32 = 1 << 3;
export const M_AC: u32 = 1 << 4;
export const M_PKE: u32 = 1 << 5;
export const M_PKS: u32 = 1 << 6;
export const M_NXE: u32 = 1 << 7;
export const M_LA57: u32 = 1 << 8;
export const M_PCIDE: u32 = 1 << 9;
export const M_PGE: u32 = 1 << 10;
export const M_LMA: u32 = 1 << 11;
/**
 * Memo of recent L1 hits (memo.ts), per CPU and L1 level (l1d, l1i), direct-mapped by 4 KiB page: a
 * sized region of MEMO_SLOTS * MEMO_SIZE bytes per CPU and level.
 */
export const MEMO_SLOTS: u32 = 256;
export const MEMO_SIZE: u32 = 32;
export const MEMO_PAGE: u32 = 0; // u64 la >> 12
export const MEMO_GENERATION: u32 = 8;
/** Bit k set: kind k (READ 0, WRITE 1, FETCH 2, not implicit) is allowed by the cached entry. */
export const MEMO_ALLOWED: u32 = 12;
export const MEMO_ENTRY: u32 = 16;
export const MEMO_LRU: u32 = 20;
// TLB levels: 4 level descriptors (l1d, l1i, l2, and the nested GPA->HPA TLB)
export const CPU_TLB_LEVELS: u32 = 0x80;
export const TLB_LEVEL_SIZE: u32 = 0x80;
// level descriptor: u32 present, u32 latency, u32 arrayCount, then up to 4 array descriptors
export const TL_PRESENT: u32 = 0;
export const TL_LATENCY: u32 = 4;
export const TL_COUNT: u32 = 8;
/** Bit (1 << sizeCode) set when some array of the level holds that size. */
export const TL_SIZEMASK: u32 = 12;
export const TL_ARRAYS: u32 = 16;
export const MAX_TLB_ARRAYS: u32 = 4;
/**
 * After the array descriptors: bit (1 << sizeCode) set when the level holds no valid entry of that size.
 * Set when an array of the size is configured and by a full scan that finds none (invalidateContext),
 * cleared by every fill of the size; lookups and page invalidations skip those sizes, which cannot
 * match. 0 (as in a checkpoint of a core without the word) only means "not known": every size is probed.
 */
export const TL_EMPTY_SIZES: u32 = 0x70;
// array / PSC descriptor (ARRAY_DESC_SIZE bytes): address, setsLog2, ways, sizeMask, policy, rng (u64)
export const ARRAY_DESC_SIZE: u32 = 24;
export const AD_BASE: u32 = 0;
export const AD_SETS_LOG2: u32 = 4;
export const AD_WAYS: u32 = 8;
export const AD_SIZEMASK: u32 = 12;
export const AD_POLICY: u32 = 14;
export const AD_RNG: u32 = 16;
// PSC descriptors for levels 5, 4, 3, 2 (index = 5 - level): each an array descriptor + present flag
export const CPU_PSC: u32 = 0x280;
/** Nested-dimension PSC descriptors, same layout, for nested levels 5..2. */
export const CPU_NPSC: u32 = 0x300;
export const PSC_DESC_SIZE: u32 = 32;
export const PD_PRESENT: u32 = 24;

/**
 * Virtual contexts: id -> (u32 VPID/ASID, u32 root tag), CONTEXT_CAPACITY of them; id 0 is the host
 * (VPID 0, no nested root). Root tags: tag -> u64 EP4TA or nCR3; tag 0 is "no nested dimension".
 * TLB and PSC entries carry a context id (linear and combined mappings) or a root tag (guest-physical
 * mappings), so invalidations can select by VPID, by root, or both, as INVVPID and INVEPT do.
 */
export const CONTEXT_TABLE: u32 = 0x9000;
export const ROOT_TABLE: u32 = 0xb000;
export const CONTEXT_CAPACITY: u32 = 1024;
export const CFG_CONTEXTS: u32 = 0x20;
export const CFG_ROOTS: u32 = 0x24;

/** The exit record. */
export const EXIT_BASE: u32 = 0x8000;
export const EX_REASON: u32 = 0x00;
export const EX_CPU: u32 = 0x04;
export const EX_INDEX: u32 = 0x08;
export const EX_KIND: u32 = 0x0c;
export const EX_LINEAR: u32 = 0x10;
export const EX_GUEST_PHYS: u32 = 0x18;
/** #PF error code, or an exit qualification. */
export const EX_QUAL: u32 = 0x20;
export const EX_REFS: u32 = 0x28;

/**
 * Scratch of the walk in progress, per guest level read: u64 entry host address, u64 entry, u64 rights so
 * far, u64 entry guest-physical address, u32 nested rights of the table page. Then the nested walk's
 * scratch (u64 address, u64 entry per level).
 */
export const WALK_SCRATCH: u32 = 0x8200;
export const WALK_SLOT: u32 = 48;
export const WS_HPA: u32 = 0;
export const WS_ENTRY: u32 = 8;
/** Rights down to the entry, in TLB attribute form (A_RW, A_US, A_XD). */
export const WS_RIGHTS: u32 = 16;
export const WS_GPA: u32 = 24;
export const WS_TABLE_RIGHTS: u32 = 32;
export const NESTED_SCRATCH: u32 = 0x8400;
export const NESTED_SLOT: u32 = 16;

/** Result block of `translate` (the single-address API). */
export const RESULT_BASE: u32 = 0x8100;
export const RS_FAULT: u32 = 0x00;
/** References of the nested dimension, included in RS_REFS. */
export const RS_NESTED_REFS: u32 = 0x04;
export const RS_PAGE_SHIFT: u32 = 0x08;
export const RS_REFS: u32 = 0x0c;
export const RS_PA: u32 = 0x10;
export const RS_CYCLES: u32 = 0x18;
/** #PF error code, EPT exit qualification or #NPF EXITINFO1 (u64). */
export const RS_ERROR: u32 = 0x20;
/** Guest-physical address of a nested fault (u64). */
export const RS_GPA: u32 = 0x28;

// --- statistics: u64 counters ---------------------------------------------------------------------
export const STATS_BASE: u32 = 0x20000;
export const STATS_SIZE: u32 = 0x10000;

// --- trace records: 16 bytes each -----------------------------------------------------------------
export const RECORDS_BASE: u32 = 0x30000;
export const RECORD_SIZE: u32 = 16;
export const RECORD_CAPACITY: u32 = 65536;
// record fields
export const REC_ADDR: u32 = 0; // u64 linear address
export const REC_KIND: u32 = 8; // u8 kind | IMPLICIT flag
export const REC_SIZE: u32 = 9; // u8 access size in bytes
export const REC_CPU: u32 = 10; // u16 cpu
export const REC_LINE: u32 = 12; // u32 source line (text traces), for error reports
// What translateBatch writes over each record (the embedding batch: one result per record).
export const BR_PA: u32 = 0; // u64 physical address; for a fault, the #PF error code or exit qualification
export const BR_OUTCOME: u32 = 8; // u8 exit reason (ExitReason.None: translated)
export const BR_PAGE_SHIFT: u32 = 9; // u8 log2 of the page size (0 on a fault)
export const BR_REFS: u32 = 10; // u16 page-walk references (0 on a TLB hit)
export const BR_CYCLES: u32 = 12; // u32 cycles

// --- demand paging in the core: a sized region (CFG_DEMAND_BASE) -----------------------------------
// A guest kernel's anonymous demand faults (a not-present #PF inside a region it pages in on demand)
// need no software decision: the kernel takes the next free frame, builds the missing tables and
// installs the leaf. Where the host allows it (bare metal, the guest OS model's own #PF handler), it
// publishes here what that handler reads (each CPU's address space and regions, and the frames its
// allocator would hand out next, in order), and the core runs the handler itself, logging each fault
// for the host to account between calls: one exit per batch instead of one per fault.
/** Header words (u32). */
export const DM_ENABLED: u32 = 0x00;
/** Cycles the kernel's handler costs (guest.faultCycles), charged as the host would. */
export const DM_FAULT_CYCLES: u32 = 0x04;
/** Paging levels of the guest's tables (4 or 5). */
export const DM_LEVELS: u32 = 0x08;
/** Faults logged since the host last drained the log. */
export const DM_LOG_COUNT: u32 = 0x0c;
/** The pool page-table frames come from (DemandPool.Small when the kernel takes them from its 4K frames). */
export const DM_TABLE_POOL: u32 = 0x10;
/** Per pool (DemandPool): u32 frames published, u32 frames taken. */
export const DM_POOLS: u32 = 0x20;
export const DEMAND_POOL_COUNT: u32 = 4;
/** Per CPU: u64 root of the address space it runs, u32 regions published (0: every fault exits). */
export const DM_CPUS: u32 = 0x40;
export const DEMAND_CPU_SIZE: u32 = 16;
export const DC_ROOT: u32 = 0;
export const DC_VMA_COUNT: u32 = 8;
/** Per CPU, DEMAND_VMAS regions in address order: u64 start, u64 end, u64 leaf entry bits, u32 page-size code. */
export const DM_VMAS: u32 = DM_CPUS + MAX_CPUS * DEMAND_CPU_SIZE;
export const DEMAND_VMAS: u32 = 64;
export const DEMAND_VMA_SIZE: u32 = 32;
export const DV_START: u32 = 0;
export const DV_END: u32 = 8;
export const DV_FLAGS: u32 = 16;
export const DV_SIZE_CODE: u32 = 24;
/** Per pool, DEMAND_POOL_CAPACITY u64 frame bases, in the order the allocator hands them out. */
export const DM_POOL_FRAMES: u32 = DM_VMAS + MAX_CPUS * DEMAND_VMAS * DEMAND_VMA_SIZE;
export const DEMAND_POOL_CAPACITY: u32 = 1024;
/** The fault log: DEMAND_LOG_CAPACITY entries of DEMAND_LOG_SIZE bytes. */
export const DM_LOG: u32 = DM_POOL_FRAMES + DEMAND_POOL_COUNT * DEMAND_POOL_CAPACITY * 8;
export const DEMAND_LOG_CAPACITY: u32 = 1024;
export const DEMAND_LOG_SIZE: u32 = 80;
export const DL_LINEAR: u32 = 0;
/** The #PF error code. */
export const DL_ERROR: u32 = 8;
/** The leaf's frame. */
export const DL_FRAME: u32 = 16;
export const DL_CPU: u32 = 24;
export const DL_SIZE_CODE: u32 = 28;
/** Page tables created, from the level of the first missing entry down: u32 count, u32 that level, u64 frames. */
export const DL_TABLE_COUNT: u32 = 32;
export const DL_TOP_LEVEL: u32 = 36;
export const DL_TABLES: u32 = 40;
export const DEMAND_REGION_SIZE: u32 = DM_LOG + DEMAND_LOG_CAPACITY * DEMAND_LOG_SIZE;

/** The frame pools of the demand-paging region: one per leaf size, and one for page tables when they have their own allocator. */
export const enum DemandPool {
  Small = 0,
  Large = 1,
  Huge = 2,
  Tables = 3,
}

// --- text input for in-core trace parsing: a sized region (CFG_TEXT_BASE) ------------------------
export const TEXT_SIZE: u32 = 0x400000;

// --- TLB, PSC and cache-model arrays: sized regions, each at its descriptor's base ------------------
export const TLB_ENTRY_SIZE: u32 = 32;
export const PSC_ENTRY_SIZE: u32 = 32;
/** Data-cache model: per line u64 tag + u64 stamp. */
export const CACHE_LINE_SIZE: u32 = 16;

// --- the fixed memos (memo.ts) ----------------------------------------------------------------------
/**
 * Per CPU, page-table line -> the L1 way holding it: a sized region of LINE_MEMO_SLOTS u32 per CPU.
 * Then, fixed: frame number -> pool address.
 */
export const LINE_MEMO_SLOTS: u32 = 1024;
export const FRAME_MEMO_BASE: u32 = 0x130000;
export const FRAME_MEMO_SLOTS: u32 = 1024;
/**
 * Memos of nested walks that succeeded without faults: the host addresses and values of the entries
 * read, and what they gave. Two tables of NESTED_MEMO_SLOTS: walks of guest page-table pages, whole and
 * direct-mapped by 4 KiB page; then walks of final addresses, direct-mapped by 2 MiB region and kept
 * down to the page table (or to a large leaf), so a hit reads only the 4K leaf again. While memory is
 * unchanged (CFG_MEMORY_GENERATION), a walk that hits reads the same entries, so it prices the same
 * lines and counts the same references without decoding them: a simulator shortcut with identical
 * results, not hardware. Each remembers too which L1 way of which CPU held each entry's line, so pricing
 * it again starts from that way (memo.ts priceRemembered).
 */
export const NESTED_MEMO_BASE: u32 = 0x134000;
export const NESTED_MEMO_SLOTS: u32 = 128;
export const NESTED_MEMO_SIZE: u32 = 192;
export const NM_KEY: u32 = 0; // u64 guest-physical page (or 2 MiB region) + 1
export const NM_CONTEXT: u32 = 8; // u64 root address | mode | levels << 2 | tracks A/D << 5
export const NM_GENERATION: u32 = 16; // u64
export const NM_USED: u32 = 24; // u8 entries remembered
export const NM_SIZE_CODE: u32 = 25; // u8 (large leaves)
export const NM_RIGHTS: u32 = 26; // u8 N_* rights, ANDed over the entries remembered
export const NM_FLAGS: u32 = 27; // u8 NMF_*
export const NM_CPU: u32 = 28; // u32 the CPU whose L1 ways NM_WAYS names
export const NM_FRAME: u32 = 32; // u64 the large leaf's host frame, or the page table's address
export const NM_ADDRESSES: u32 = 40; // u64 x 5: host address of each entry read, top level first
export const NM_ENTRIES: u32 = 80; // u64 x 5: each entry's value
export const NM_WAYS: u32 = 120; // u32 x 5: the L1 way that held each entry's line
export const NMF_USER: u32 = 1;
export const NMF_ALL_ACCESSED: u32 = 2;
export const NMF_LEAF_DIRTY: u32 = 4;
/** The entries remembered end at the leaf (else at the page-directory entry). */
export const NMF_LARGE: u32 = 8;
/**
 * Memo of guest walks, direct-mapped by 2 MiB linear region (a simulator shortcut like the others): the
 * entries from the top level down to the page-directory entry, with each table page's nested references
 * under EPT/NPT. Used only where no cache stands in between (no guest PSC hit; under a nested dimension
 * no nested TLB or PSC), so a hit prices exactly the lines and counts exactly the references of the
 * walk it replaces, then walks the page table itself. Valid for one memory generation. With each entry
 * it keeps the rights accumulated down to it and, as the nested memo, the L1 ways that held the lines.
 * (At most 4 levels above the page table and the page table's page, each with at most 5 nested
 * references: 29 references.)
 */
export const WALK_MEMO_BASE: u32 = 0x140000;
export const WALK_MEMO_SLOTS: u32 = 32;
export const WALK_MEMO_SIZE: u32 = 640;
export const WM_KEY: u32 = 0; // u64 (la >> 21) + 1
export const WM_ROOT: u32 = 8; // u64 CR3's table address | LA57 | NXE << 1
export const WM_NESTED: u32 = 16; // u64 the nested context (0 without one)
export const WM_GENERATION: u32 = 24; // u64
export const WM_LEVELS: u32 = 32; // u32 levels remembered
export const WM_CPU: u32 = 36; // u32 the CPU whose L1 ways WM_WAYS names
export const WM_REF_COUNT: u32 = 40; // u32 references in WM_REFS
export const WM_NESTED_REFS: u32 = 44; // u32 how many of them are nested references
/** Under a nested dimension, the page table's page: its host address and nested rights. */
export const WM_TABLE_HPA: u32 = 48; // u64
export const WM_TABLE_RIGHTS: u32 = 56; // u32
/**
 * Every reference the walk made before reading the page table, in order: each level's table page's
 * nested references then its entry, and last the page table's page's nested references.
 */
export const WM_REFS: u32 = 64; // u64 x WM_MAX_REFS host addresses
export const WM_WAYS: u32 = 320; // u32 x WM_MAX_REFS the L1 ways that held their lines
export const WM_MAX_REFS: u32 = 32;
export const WM_LEVEL_BASE: u32 = 448;
export const WM_LEVEL_SIZE: u32 = 40;
export const WML_GPA: u32 = 0; // u64 the entry's guest-physical address
export const WML_HPA: u32 = 8; // u64 its host address
export const WML_ENTRY: u32 = 16; // u64
export const WML_RIGHTS: u32 = 24; // u64 rights down to the entry (WS_RIGHTS)
export const WML_TABLE_RIGHTS: u32 = 32; // u32 nested rights of its table's page
// --- IOMMU: registers, fault-recording registers, context cache, IOTLB ---------------------------
/**
 * The IOMMU's own state (Intel VT-d or AMD-Vi, docs/iommu.md), in the control block: configuration and
 * the registers the host programs (root/device-table address, invalidation queue, event log), walk
 * scratch and the VT-d fault-recording registers. Its context cache, IOTLB and paging-structure cache
 * are sized regions, at their descriptors' bases; its tables live in host physical memory.
 */
export const IOMMU_BASE: u32 = 0x1d000;
export const IOMMU_SIZE: u32 = 0x2000;
/** IommuKind. */
export const IO_KIND: u32 = 0x00;
/** VT-d: supported AW values as a bit mask (CAP.SAGAW: bit 1 = 3 levels, 2 = 4, 3 = 5). */
export const IO_SAGAW: u32 = 0x04;
/** VT-d RTADDR (bit 10 = SMT, scalable mode) or the AMD-Vi device-table base (u64). */
export const IO_ROOT: u32 = 0x08;
/** Structure and data accesses at or above this host-physical address fail (u64). */
export const IO_MEM_TOP: u32 = 0x10;
/** IO_F_* capability bits. */
export const IO_FLAGS: u32 = 0x18;
export const IO_IOTLB_LATENCY: u32 = 0x1c;
/** IOTLB and context-cache descriptors: array descriptors (ARRAY_DESC_SIZE) plus a present word. */
export const IO_IOTLB_DESC: u32 = 0x20;
export const IO_CC_DESC: u32 = 0x40;
export const IO_DESC_PRESENT: u32 = 0x18;
/** VT-d fault recording: number of fault-recording registers (CAP.NFR + 1) and FSTS. */
export const IO_FAULT_RECORDS: u32 = 0x60;
export const IO_FSTS: u32 = 0x64;
/** Invalidation queue (VT-d IQA/IQH/IQT) or command buffer (AMD-Vi): base (u64), entries, head, tail. */
export const IO_QUEUE_BASE: u32 = 0x68;
export const IO_QUEUE_ENTRIES: u32 = 0x70;
export const IO_QUEUE_HEAD: u32 = 0x74;
export const IO_QUEUE_TAIL: u32 = 0x78;
/** AMD-Vi event log: base (u64), entries, head, tail, and the status register (EventOverflow ...). */
export const IO_EVENT_BASE: u32 = 0x80;
export const IO_EVENT_ENTRIES: u32 = 0x88;
export const IO_EVENT_HEAD: u32 = 0x8c;
export const IO_EVENT_TAIL: u32 = 0x90;
export const IO_STATUS: u32 = 0x94;
/** Paging-structure cache descriptor (array descriptor plus a present word at IO_DESC_PRESENT). */
export const IO_PSC_DESC: u32 = 0xc0;
/** Scratch of the IO walk in progress: 32 bytes per entry read (see mmu/iowalk.ts). */
export const IO_WALK_SCRATCH: u32 = 0x100;
/** Scratch of the second-level walks a nested (PGTT=3) walk makes, apart from its first-level entries. */
export const IO_NESTED_WALK_SCRATCH: u32 = 0x300;
export const IO_FAULT_RECORD_BASE: u32 = 0x1000;
export const IO_MAX_FAULT_RECORDS: u32 = 256;
export const IO_CC_ENTRY_SIZE: u32 = 64;
export const IO_CC_MAX_ENTRIES: u32 = 512;
export const IO_IOTLB_ENTRY_SIZE: u32 = 32;
export const IO_IOTLB_MAX_ENTRIES: u32 = 4096;
export const IO_PSC_ENTRY_SIZE: u32 = 32;
export const IO_PSC_MAX_ENTRIES: u32 = 2048;
export const enum IommuKind {
  None = 0,
  Vtd = 1,
  Amdvi = 2,
}
/** Capabilities: 2M and 1G second-level pages (CAP.SLLPS), snoop control (ECAP.SC). */
export const IO_F_2M: u32 = 1;
export const IO_F_1G: u32 = 2;
export const IO_F_SNOOP: u32 = 4;

/**
 * Device DMA requests (a sized region at CFG_DMA_BASE), one PCIe memory request each (at most 4 KiB, never crossing a 4 KiB boundary):
 * u64 address, u64 data (written by a write with DMA_DATA; a read with DMA_DATA returns the first
 * qword), u64 host-physical address (out), u16 requester id, u8 flags, u8 status (out: 0 or a fault
 * cause IoFault), u32 PASID (bits 19:0) | (length - 1) << 20.
 */
export const DMA_RECORD_SIZE: u32 = 32;
export const DMA_CAPACITY: u32 = 32768;
export const DMA_ADDR: u32 = 0;
export const DMA_DATA: u32 = 8;
export const DMA_HPA: u32 = 16;
export const DMA_SID: u32 = 24;
export const DMA_FLAGS: u32 = 26;
export const DMA_STATUS: u32 = 27;
export const DMA_PASID_LENGTH: u32 = 28;
export const DMA_F_WRITE: u32 = 1;
export const DMA_F_PASID: u32 = 2;
/** An ATS translated request: the address is already host-physical (from the device's ATC). */
export const DMA_F_TRANSLATED: u32 = 4;
export const DMA_F_DATA: u32 = 8;
/** Status of a malformed record (length, or crossing a 4 KiB boundary): nothing translated or moved. */
export const DMA_BAD: u32 = 0xff;
/** Status of a request translated to an address with no memory behind it (at or above IO_MEM_TOP). */
export const DMA_UNSUPPORTED: u32 = 0xfe;

/**
 * IOMMU fault causes. 1..0xD are the VT-d fault reasons (docs/iommu.md §VT-d: fault records and fault
 * reasons) and are what a VT-d fault record holds; PasidEntry is recorded as VT-d reason 0x58; AMD-Vi
 * reports each cause as an event (MODEL.md §13).
 */
export const enum IoFault {
  None = 0,
  RootNotPresent = 1,
  ContextNotPresent = 2,
  InvalidContext = 3,
  AddressBeyondWidth = 4,
  NoWrite = 5,
  NoRead = 6,
  EntryAccessFailed = 7,
  RootAccessFailed = 8,
  ContextAccessFailed = 9,
  RootReserved = 0xa,
  ContextReserved = 0xb,
  EntryReserved = 0xc,
  TranslationTypeBlocked = 0xd,
  PasidEntry = 0xe,
  IllegalDeviceTableEntry = 0xf,
  PageNotPresent = 0x10,
}
/** Statistics slots for fault causes (S_IO_FAULTS + cause). */
export const IO_FAULT_CAUSES: u32 = 0x11;

/** IOMMU invalidation kinds, for statistics (S_IO_INVALIDATIONS + kind). */
export const enum IoInvalidation {
  ContextGlobal = 0,
  ContextDomain = 1,
  ContextDevice = 2,
  IotlbGlobal = 3,
  IotlbDomain = 4,
  IotlbPage = 5,
  PasidIotlb = 6,
  PasidCache = 7,
  Wait = 8,
  DeviceTableEntry = 9,
  IommuPages = 10,
  InvalidateAll = 11,
  Rejected = 12,
}
/** VT-d FSTS bits, and AMD-Vi status bits. */
export const FSTS_PFO: u32 = 1;
export const FSTS_PPF: u32 = 2;
export const FSTS_IQE: u32 = 16;
export const AMD_EVENT_OVERFLOW: u32 = 1;
export const AMD_COMWAIT_INT: u32 = 4;

/**
 * Where the sized regions start (heap.ts): the TLB, PSC and cache-model arrays, the per-CPU memos, the
 * text and DMA buffers, the IOMMU's caches, the frame directory (hash: u64 frame number + 1, u32 pool
 * address >> 12; it grows as frames are backed) and the frames themselves.
 */
export const HEAP_BASE: u32 = 0x148000;
export const DIR_ENTRY_SIZE: u32 = 16;
/** log2 of the frame directory's first capacity (it doubles when three quarters full). */
export const DIR_FIRST_LOG2: u32 = 10;

export const FRAME_SIZE: u32 = 4096;

// --- exit reasons ---------------------------------------------------------------------------------
/** Why a replay stopped (EX_REASON); the host names them (docs/MODEL.md §10). */
export const enum ExitReason {
  None = 0,
  PageFault = 1,
  GeneralProtection = 2,
  Budget = 3,
  BadRecord = 4,
  EptViolation = 5,
  EptMisconfig = 6,
  Npf = 7,
  /** The page-modification log is full (SDM 29.3.6): an EPT A/D update found the PML index out of 0..511. */
  PmlFull = 8,
}
/** Statistics slots for exit reasons (S_EXIT_REASONS + reason). */
export const EXIT_REASONS: u32 = 16;

/** How the last CPU walk ended (lastWalkFault). */
export const enum WalkFault {
  Ok = 0,
  NotPresent = 1,
  Reserved = 2,
  Protection = 3,
  EptViolation = 4,
  EptMisconfig = 5,
  Npf = 6,
  PmlFull = 7,
}

/** The outcome of one access (`translate`'s result): the exception or VM exit it raises. */
export const enum FaultType {
  None = 0,
  GeneralProtection = 13,
  PageFault = 14,
  /** VM exit reasons 48 and 49 (SDM Appendix C). */
  EptViolation = 48,
  EptMisconfig = 49,
  /** The #NPF exit code 0x400 (APM 15.25.6). */
  NestedPageFault = 0x400,
  /** VM exit reason 62, page-modification log full (SDM Appendix C). */
  PmlFull = 62,
}

// --- access kinds ---------------------------------------------------------------------------------
/** A record's kind byte: the access kind in bits 6:0, KIND_IMPLICIT for implicit supervisor accesses. */
export const enum AccessKind {
  Read = 0,
  Write = 1,
  Fetch = 2,
  ShadowStackRead = 3,
  ShadowStackWrite = 4,
}
export const KIND_MASK: u32 = 0x7f;
export const KIND_IMPLICIT: u32 = 0x80;

// --- structures -------------------------------------------------------------------------------------
/** Replacement policies of every set-associative structure (AD_POLICY); see mmu/setassoc.ts. */
export const enum Policy {
  Lru = 0,
  Fifo = 1,
  Random = 2,
}
/** How many policies there are: set-up calls refuse codes at or above it. */
export const POLICY_COUNT: u32 = 3;

/** A CPU's TLB levels (CPU_TLB_LEVELS + level * TLB_LEVEL_SIZE). */
export const enum TlbLevel {
  L1d = 0,
  L1i = 1,
  L2 = 2,
  /** The nested (guest-physical -> host-physical) TLB, tagged by root instead of context. */
  Nested = 3,
}

/** Data-cache levels (CFG_CACHE_DESC + level * CACHE_DESC_SIZE): l1 and l2 per CPU, llc shared. */
export const enum CacheLevel {
  L1 = 0,
  L2 = 1,
  Llc = 2,
}

// --- errors -----------------------------------------------------------------------------------------
/** Errors of the physical-memory writers (0 = ok). */
export const enum PhysError {
  Ok = 0,
  BeyondMaxPhyAddr = 1,
  DirectoryFull = 2,
  OutOfMemory = 3,
  Misaligned = 4,
}

/** Errors of the set-up calls (negative; 0 or a positive result is success). */
export const enum SetupError {
  Geometry = -1,
  RegionFull = -2,
  BadArgument = -3,
  OutOfMemory = -4,
  /** VM entry refused (SDM 27.2.1.1): an EPTP memory type other than UC (0) or WB (6). */
  EptpMemoryType = -5,
  /** VM entry refused: an EPTP walk length (bits 5:3, plus one) other than 4 or 5. */
  EptpWalkLength = -6,
  /** VM entry refused: a reserved EPTP bit (11:7, or at or above MAXPHYADDR), or an nCR3 beyond MAXPHYADDR. */
  RootReserved = -7,
  /** VM entry refused (SDM 27.2.1.1): "enable PML" without EPT, or a PML address not 4 KiB-aligned or beyond MAXPHYADDR. */
  PmlAddress = -8,
}
