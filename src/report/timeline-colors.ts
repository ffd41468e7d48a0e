// The colours a timeline chart gives the overcommit controller's states, lightest for plenty of free
// memory (vSphere's bands and oVirt MoM's): one table for the playground's Overcommit view and for
// scripts/timeline-svg.mjs, so both charts of one run read the same.

/** Band colour of each controller state ("-": no controller). */
export const STATE_COLORS: Readonly<Record<string, string>> = {
  high: "#e8f5e9",
  clear: "#fffde7",
  soft: "#fff3e0",
  hard: "#ffebee",
  low: "#ffcdd2",
  normal: "#e8f5e9",
  pressure: "#fff3e0",
  critical: "#ffcdd2",
  "-": "#ffffff",
};
