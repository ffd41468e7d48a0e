#!/usr/bin/env node
// Writes the host's copy of the core's memory map from the core's own source, so each constant is
// written once: `npm run build` runs this before tsc. From each AssemblyScript file it carries over, in
// order, every `export const NAME: <integer type> = <expression>;` (evaluated, or kept as written when
// the expression means the same in TypeScript), every `export const enum`, and the comments that
// describe them. An enum becomes an object of its members' codes and, when its codes run 0, 1, 2...,
// an array of their names in lower camel case (Policy.Lru -> "lru"): the names the host uses in
// configuration files and reports. Anything else in the file (imports, functions) is left out.
//
// Usage: node scripts/generate-layout.mjs [--check]
//   --check  writes nothing; exits 1, naming the file, when a generated file is missing or stale.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Each core source and the host file generated from it. */
export const GENERATED = [
  { source: "assembly/constants.ts", target: "src/core/layout.ts" },
  { source: "assembly/stats.ts", target: "src/core/stats-layout.ts" },
];

const INTEGER_TYPES = new Set(["u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "usize", "isize"]);

export class LayoutError extends Error {}

/** "PageFault" -> "pageFault", "L1d" -> "l1d", "Lru" -> "lru". */
export function lowerCamel(name) {
  return name[0].toLowerCase() + name.slice(1);
}

/** "ExitReason" -> "EXIT_REASON". */
function screamingSnake(name) {
  return name.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase();
}

/**
 * The value of an AssemblyScript integer expression over literals and earlier constants, as a BigInt.
 * Casts (`<u64>`) are dropped; `>>` on these non-negative values is the same as AssemblyScript's.
 */
function evaluate(expression, known, where) {
  const bigint = expression
    .replace(/<[iu](8|16|32|64|size)>/g, "")
    .replace(/\b(0x[0-9a-fA-F]+|\d+)\b/g, "$1n")
    .replace(/\b([A-Za-z_]\w*)\b(?!n\b)/g, (name) => {
      if (!known.has(name))
        throw new LayoutError(`${where}: ${name} is not an earlier constant of this file`);
      return `${known.get(name)}n`;
    });
  if (!/^[\s\d()a-fA-Fxn+\-*|&^~<>]*$/.test(bigint)) {
    throw new LayoutError(`${where}: cannot evaluate "${expression}"`);
  }
  return Function(`"use strict"; return (${bigint});`)();
}

/** The expression as TypeScript would write it, if it evaluates there to the same number; else the value. */
function tsExpression(expression, value, known) {
  if (/^(0x[0-9a-fA-F]+|\d+)$/.test(expression)) return expression;
  const plain = expression.replace(/<[iu](8|16|32|64|size)>/g, "");
  try {
    const names = [...known.keys()];
    const same = Function(
      ...names,
      `"use strict"; return (${plain});`,
    )(...names.map((n) => Number(known.get(n))));
    if (BigInt(same) === value) return plain;
  } catch {}
  return value > 0xffffn ? `0x${value.toString(16)}` : value.toString();
}

/** Parses one AssemblyScript source into the items to generate, in source order. */
export function parse(text, file) {
  const lines = text.split("\n");
  const items = [];
  const known = new Map();
  let comment = [];
  let header = true;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const where = `${file}:${i + 1}`;
    const trimmed = line.trim();
    if (trimmed === "") {
      if (!header && comment.length === 0) items.push({ kind: "blank" });
      header = false;
      comment = [];
      continue;
    }
    if (trimmed.startsWith("/**")) {
      comment = [line];
      while (!lines[i].includes("*/")) comment.push(lines[++i]);
      continue;
    }
    if (trimmed.startsWith("//")) {
      // The file's opening comment describes the core file; the generated header replaces it.
      if (!header) items.push({ kind: "comment", lines: [line] });
      continue;
    }
    header = false;
    const constant = /^export const (\w+): (\w+) = (.+?);\s*(\/\/.*)?$/.exec(line);
    if (constant) {
      const [, name, type, expression, trailing] = constant;
      if (!INTEGER_TYPES.has(type))
        throw new LayoutError(`${where}: ${name} has type ${type}, not an integer`);
      const value = evaluate(expression, known, where);
      items.push({
        kind: "const",
        name,
        expression: tsExpression(expression, value, known),
        comment,
        trailing,
      });
      known.set(name, value);
      comment = [];
      continue;
    }
    const enumStart = /^export const enum (\w+) \{$/.exec(line);
    if (enumStart) {
      const members = [];
      let memberComment = [];
      let next = 0n;
      for (i++; lines[i].trim() !== "}"; i++) {
        const member = lines[i].trim();
        if (member.startsWith("/**")) {
          memberComment = [lines[i]];
          while (!lines[i].includes("*/")) memberComment.push(lines[++i]);
          continue;
        }
        const match = /^(\w+)(?: = (.+?))?,$/.exec(member);
        if (!match) throw new LayoutError(`${file}:${i + 1}: cannot read enum member "${member}"`);
        const value = match[2] === undefined ? next : evaluate(match[2], known, `${file}:${i + 1}`);
        members.push({ name: match[1], value, comment: memberComment });
        memberComment = [];
        next = value + 1n;
      }
      items.push({ kind: "enum", name: enumStart[1], members, comment });
      comment = [];
      continue;
    }
    // Imports, functions and anything else the host does not need: skip the statement.
    let depth = 0;
    for (;;) {
      for (const c of lines[i]) depth += c === "{" ? 1 : c === "}" ? -1 : 0;
      if (depth <= 0 && (/[;}]\s*$/.test(lines[i]) || depth < 0)) break;
      if (++i >= lines.length) break;
    }
    comment = [];
  }
  return items;
}

/** The TypeScript text of a generated file. */
export function render(items, source) {
  const out = [
    `// GENERATED from ${source} by scripts/generate-layout.mjs: do not edit. Change the core's`,
    "// constant there; `npm run build` (or `node scripts/generate-layout.mjs`) writes this file again.",
    "",
  ];
  const dedent = (lines) => lines.map((l) => l.replace(/^\s+/, (s) => s.slice(Math.min(s.length, 2))));
  for (const item of items) {
    if (item.kind === "blank") {
      if (out[out.length - 1] !== "") out.push("");
    } else if (item.kind === "comment") {
      out.push(...item.lines);
    } else if (item.kind === "const") {
      out.push(...item.comment);
      out.push(`export const ${item.name} = ${item.expression};${item.trailing ? ` ${item.trailing}` : ""}`);
    } else {
      out.push(...item.comment);
      out.push(`export const ${item.name} = {`);
      for (const member of item.members) {
        out.push(...dedent(member.comment));
        out.push(`  ${member.name}: ${member.value},`);
      }
      out.push("} as const;");
      const dense = item.members.every((m, index) => m.value === BigInt(index));
      if (dense) {
        const list = screamingSnake(item.name);
        out.push(`/** ${item.name} names by code, as the host spells them. */`);
        out.push(
          `export const ${list}_NAMES = [${item.members.map((m) => `"${lowerCamel(m.name)}"`).join(", ")}] as const;`,
        );
        out.push(`export type ${item.name}Name = (typeof ${list}_NAMES)[number];`);
      }
    }
  }
  while (out[out.length - 1] === "") out.pop();
  return `${out.join("\n")}\n`;
}

export function generate(source) {
  return render(parse(readFileSync(join(ROOT, source), "utf8"), source), source);
}

function main() {
  const check = process.argv.includes("--check");
  let stale = 0;
  for (const { source, target } of GENERATED) {
    const text = generate(source);
    const path = join(ROOT, target);
    const current = existsSync(path) ? readFileSync(path, "utf8") : undefined;
    if (current === text) continue;
    if (check) {
      console.error(
        `${relative(process.cwd(), path)} is ${current === undefined ? "missing" : "stale"}: run npm run build`,
      );
      stale++;
    } else {
      writeFileSync(path, text);
    }
  }
  if (stale > 0) process.exit(1);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    main();
  } catch (error) {
    if (!(error instanceof LayoutError)) throw error;
    console.error(`generate-layout: ${error.message}`);
    process.exit(2);
  }
}
