// Entry point of the WebAssembly module: the exports are defined in abi.ts.
export * from "./abi";
