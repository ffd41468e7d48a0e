import { describe, expect, it } from "vitest";
import { ConfigError, defaultConfig, parseConfigText, resolveConfig } from "../../src/config/config.js";

const rejects = (config: unknown, key: string) => {
  expect(() => resolveConfig(config as never)).toThrow(ConfigError);
  expect(() => resolveConfig(config as never)).toThrow(new RegExp(`"${key.replace(/[[\].]/g, "\\$&")}"`));
};

describe("configuration", () => {
  it("accepts the documented native config with l2 switched off and the PSCs off", () => {
    const config = resolveConfig({
      mode: "native",
      guest: { levels: 4, pageSize: "4K" },
      tlb: {
        l1d: { entries: 64, ways: 4, policy: "lru" },
        l1i: { entries: 128, ways: 8, policy: "lru" },
        l2: null,
      },
      psc: false,
    });
    expect(config.machine.tlb.l2).toBeNull();
    // One geometry for a level gives every page size its own array of that geometry.
    expect(config.machine.tlb.l1d?.arrays.map((a) => [a.sizes, a.entries, a.ways])).toEqual([
      [["4K"], 64, 4],
      [["2M"], 64, 4],
      [["1G"], 64, 4],
    ]);
    expect([config.machine.psc.pml4, config.machine.psc.pdpte, config.machine.psc.pde]).toEqual([
      null,
      null,
      null,
    ]);
  });

  it("missing keys take the Skylake-class defaults", () => {
    const config = resolveConfig({});
    expect(config).toEqual(defaultConfig());
    expect(config.machine.tlb.l2?.arrays[0]).toEqual({
      sizes: ["4K", "2M"],
      entries: 1536,
      ways: 12,
      policy: "lru",
    });
  });

  it("per-size keys and shared arrays give the arrays they name", () => {
    const perSize = resolveConfig({
      tlb: { l1d: { "4K": { entries: 64, ways: 4 }, "2M": { entries: 32, ways: 4 } } },
    });
    expect(perSize.machine.tlb.l1d?.arrays.map((a) => a.sizes)).toEqual([["4K"], ["2M"]]);
    const shared = resolveConfig({
      tlb: {
        l2: { arrays: [{ sizes: ["4K", "2M"], entries: 1024, ways: 8, policy: "random" }], latency: 9 },
      },
    });
    expect(shared.machine.tlb.l2).toEqual({
      latency: 9,
      arrays: [{ sizes: ["4K", "2M"], entries: 1024, ways: 8, policy: "random" }],
    });
  });

  it("an unknown key is rejected and named", () => {
    rejects({ tlb: { l1d: { entries: 64, ways: 4, polcy: "lru" } } }, "tlb.l1d.polcy");
    rejects({ gueest: {} }, "gueest");
    rejects({ guest: { pageSize: "4K", huge: true } }, "guest.huge");
  });

  it("a set count that is not a power of two is rejected and named", () => {
    rejects({ tlb: { l1d: { entries: 48, ways: 4 } } }, "tlb.l1d");
    rejects({ psc: { pde: { entries: 24, ways: 2 } } }, "psc.pde");
    rejects({ cache: { l1: { size: "48K", ways: 8 } } }, "cache.l1");
  });

  it("more ways than entries is rejected and named", () => {
    rejects({ tlb: { l1i: { entries: 8, ways: 16 } } }, "tlb.l1i.ways");
  });

  it("bad values name their key", () => {
    rejects({ guest: { pageSize: "4M" } }, "guest.pageSize");
    rejects({ guest: { levels: 3 } }, "guest.levels");
    rejects(
      {
        tlb: {
          l2: {
            arrays: [
              { sizes: ["4K"], entries: 16, ways: 4 },
              { sizes: ["4K"], entries: 16, ways: 4 },
            ],
          },
        },
      },
      "tlb.l2.arrays[1].sizes",
    );
    rejects({ machine: { maxPhyAddr: 60 } }, "machine.maxPhyAddr");
    rejects({ guest: { pageSize: "1G" }, machine: { gbPages: false } }, "guest.pageSize");
  });

  it("a JSON syntax error names the file", () => {
    expect(() => parseConfigText("{ mode: native }", "my.json")).toThrow(/my\.json: not valid JSON/);
  });

  it("config errors carry exit code 2", () => {
    try {
      resolveConfig({ bogus: 1 });
    } catch (error) {
      expect((error as ConfigError).exitCode).toBe(2);
    }
  });
});

describe("virtualization configuration", () => {
  it("accepts the modes, host, nestedTlb and hypervisor keys, with per-reason exit costs", () => {
    const config = resolveConfig({
      mode: "npt",
      host: { levels: 5, pageSize: "2M", memory: "512G" },
      nestedTlb: null,
      hypervisor: { exitCycles: 1000, exitCyclesByReason: { npf: 1500 }, vpid: false, dirtyLog: "wp" },
    });
    expect(config.mode).toBe("npt");
    expect(config.host).toEqual({ levels: 5, pageSize: "2M", memory: 512 * 2 ** 30 });
    expect(config.machine.nestedTlb).toBeNull();
    expect(config.hypervisor.costs.exit).toBe(1000);
    expect(config.hypervisor.costs.exitByReason).toEqual({ npf: 1500 });
    expect(config.hypervisor.vpid).toBe(false);
  });

  it("an unknown exit reason or mode is rejected and named", () => {
    rejects({ hypervisor: { exitCyclesByReason: { vmcall: 5 } } }, "hypervisor.exitCyclesByReason.vmcall");
    rejects({ mode: "kvm" }, "mode");
    rejects({ host: { pageSize: "4M" } }, "host.pageSize");
  });

  it("dirty logging is by write protection under shadow paging, and absent under paravirtual paging", () => {
    expect(resolveConfig({ mode: "shadow", hypervisor: { dirtyLog: "wp" } }).hypervisor.dirtyLog).toBe("wp");
    rejects({ mode: "shadow", hypervisor: { dirtyLog: "dbit" } }, "hypervisor.dirtyLog");
    rejects({ mode: "pv", hypervisor: { dirtyLog: "wp" } }, "hypervisor.dirtyLog");
  });
});
