// The documentation stands alone: a clone of the repository holds every page its README, docs and code
// comments point to. Nothing may refer to the workspace's reference-facts file or to a path beside the
// repository; every relative link resolves to a tracked file; every citation of a docs page's section
// (the page's file name, then the section sign and a heading or a section number) names a page that
// exists and a heading it has.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join, posix, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
// @ts-expect-error: a plain ES module script, without type declarations
import { GENERATED } from "../../scripts/generate-layout.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

const tracked: string[] = execFileSync("git", ["ls-files", "-z"], { cwd: ROOT, encoding: "utf8" })
  .split("\0")
  .filter((path) => path !== "");
// Files the build writes from tracked ones (scripts/generate-layout.mjs) count as the repository's too.
const trackedFiles = new Set([...tracked, ...(GENERATED as { target: string }[]).map((file) => file.target)]);
const trackedDirectories = new Set(
  tracked.flatMap((path) =>
    path
      .split("/")
      .slice(0, -1)
      .map((_, i, parts) => parts.slice(0, i + 1).join("/")),
  ),
);

/** Tracked text files and their contents (a NUL in the first 8 KiB marks a binary file). */
const texts = new Map<string, string>();
for (const path of tracked) {
  let bytes: Buffer;
  try {
    bytes = readFileSync(join(ROOT, path));
  } catch {
    continue; // deleted in the working tree but not yet from the index
  }
  if (bytes.subarray(0, 8192).includes(0)) continue;
  texts.set(path, bytes.toString("utf8"));
}

const markdownPages = tracked.filter((path) => path === "README.md" || /^docs\/.*\.md$/.test(path));

/** The text with fenced code blocks and inline code spans blanked, so code is not read as links. */
function prose(text: string): string {
  return text.replace(/^```[\s\S]*?^```/gm, "").replace(/`[^`\n]*`/g, "");
}

/** Headings of a Markdown page, outside code blocks. */
function headings(path: string): string[] {
  const text = texts.get(path) ?? "";
  return [...text.replace(/^```[\s\S]*?^```/gm, "").matchAll(/^#{1,6}\s+(.+?)\s*$/gm)].map((m) => m[1]);
}

/**
 * Whether `section` (the text after a section sign) starts with a heading of the page, or is a section
 * number: a numbered heading ("13.2"), or an item of a numbered list in one ("8.4", item 4 of §8).
 */
function pageHasSection(page: string, section: string): boolean {
  const number = /^\d+(?:\.\d+)*/.exec(section)?.[0];
  if (number === undefined) return headings(page).some((heading) => section.startsWith(heading));
  const numbered = (n: string) => (heading: string) =>
    heading.startsWith(`${n}.`) || heading.startsWith(`${n} `);
  if (headings(page).some(numbered(number))) return true;
  const dot = number.lastIndexOf(".");
  if (dot < 0) return false;
  const parent = number.slice(0, dot);
  const lines = (texts.get(page) ?? "").split("\n");
  const start = lines.findIndex(
    (line) => /^#{1,6}\s/.test(line) && numbered(parent)(line.replace(/^#+\s+/, "")),
  );
  if (start < 0) return false;
  const next = lines.findIndex((line, i) => i > start && /^#{1,6}\s/.test(line));
  const body = lines.slice(start + 1, next < 0 ? undefined : next);
  return body.some((line) => line.startsWith(`${number.slice(dot + 1)}. `));
}

/** Where a relative link from `from` points, repository-relative, or undefined when it leaves the repository. */
function resolveLink(from: string, target: string): string | undefined {
  const path = decodeURI(target.replace(/[#?].*$/, ""));
  const joined = path.startsWith("/") ? path.slice(1) : posix.join(posix.dirname(from), path);
  const normal = posix.normalize(joined).replace(/\/$/, "");
  return relative(ROOT, resolve(ROOT, normal)).startsWith("..") ? undefined : normal;
}

describe("the documentation stands alone", () => {
  it("no tracked file names the workspace's reference-facts file or a path beside the repository", () => {
    // Spelled in pieces so this file does not match its own patterns.
    const forbidden = [["spec", "md"].join("."), ["..", "shared"].join("/"), ["", "work", ""].join("/")];
    const offenders: string[] = [];
    for (const [path, text] of texts) {
      const lower = text.toLowerCase();
      for (const needle of forbidden) {
        const at = lower.indexOf(needle);
        if (at >= 0) offenders.push(`${path}:${lower.slice(0, at).split("\n").length}: ${needle}`);
      }
    }
    expect(offenders).toEqual([]);
  });

  it("every relative link in README.md and docs/*.md resolves to a tracked file or directory", () => {
    expect(markdownPages).toContain("docs/MODEL.md");
    const broken: string[] = [];
    let links = 0;
    for (const page of markdownPages) {
      const text = prose(texts.get(page) ?? "");
      const targets = [
        ...[...text.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1]),
        ...[...text.matchAll(/^\s*\[[^\]]+\]:\s*(\S+)/gm)].map((m) => m[1]),
        ...[...text.matchAll(/\b(?:src|href)="([^"]+)"/g)].map((m) => m[1]),
      ];
      for (const target of targets) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith("#")) continue;
        links++;
        const path = resolveLink(page, target);
        if (path === undefined) broken.push(`${page}: ${target} leaves the repository`);
        else if (!trackedFiles.has(path) && !trackedDirectories.has(path))
          broken.push(`${page}: ${target} is not a file in the repository`);
      }
    }
    expect(broken).toEqual([]);
    // The docs pages link to one another: a parser that found nothing would pass vacuously.
    expect(links).toBeGreaterThan(20);
  });

  it("every docs/ file a tracked file names exists, and every section of a page it cites is a heading there", () => {
    const problems: string[] = [];
    let citations = 0;
    for (const [path, text] of texts) {
      for (const m of text.matchAll(/\bdocs\/[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.(?:md|svg|png)\b/g)) {
        if (!trackedFiles.has(m[0])) problems.push(`${path}: ${m[0]} does not exist`);
      }
      for (const m of text.matchAll(/(\bdocs\/)?\b([A-Za-z0-9_-]+\.md)\)?\s*§(?=([^()\];]{0,300}))/g)) {
        const [, prefix, name, raw] = m;
        // A citation may wrap onto the next comment line; it ends at a sentence end, a comma not
        // followed by another section, or a blank line.
        const sections = raw.replace(/\n\s*(?:\/\/+|\*|#+)?\s*/g, " ").split(/\.(?:\s|$)|,\s*(?!§)|\n/)[0];
        const candidates = prefix || path.startsWith("docs/") ? [`docs/${name}`] : [name, `docs/${name}`];
        const page = candidates.find((candidate) => trackedFiles.has(candidate));
        if (page === undefined) {
          problems.push(`${path}: cites ${name}, which is not in the repository`);
          continue;
        }
        for (const section of sections.split("§")) {
          if (section.trim() === "") continue;
          citations++;
          if (!pageHasSection(page, section.trim()))
            problems.push(`${path}: ${page} has no section "${section.trim()}"`);
        }
      }
    }
    expect(problems).toEqual([]);
    expect(citations).toBeGreaterThan(20);
  });

  it("every repository path a docs page quotes exists, and docs/README.md lists every page", () => {
    const missing: string[] = [];
    for (const page of markdownPages) {
      for (const m of (texts.get(page) ?? "").matchAll(
        /`((?:assembly|bench|bin|docs|examples|scripts|src|test)\/[A-Za-z0-9_./-]*)`/g,
      )) {
        const path = m[1].replace(/\/$/, "");
        if (!trackedFiles.has(path) && !trackedDirectories.has(path)) missing.push(`${page}: ${m[1]}`);
      }
    }
    expect(missing).toEqual([]);
    const index = texts.get("docs/README.md") ?? "";
    const unlisted = markdownPages
      .filter((page) => page.startsWith("docs/") && page !== "docs/README.md")
      .filter((page) => !index.includes(`](${page.slice("docs/".length)})`));
    expect(unlisted).toEqual([]);
  });
});
