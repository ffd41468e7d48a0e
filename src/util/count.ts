// Counts as the reports print them: en-US digit grouping ("1,234,567"), exactly what
// Number.prototype.toLocaleString("en-US") prints. Whole numbers are grouped here, because the first
// toLocaleString call loads ICU's locale data (20-50 ms of CPU), a large share of a small run's start-up;
// anything else (fractions, infinities, NaN) still goes to it.

export function count(n: number): string {
  if (!Number.isSafeInteger(n) || Object.is(n, -0)) return n.toLocaleString("en-US");
  const digits = String(Math.abs(n));
  let grouped = digits.slice(0, ((digits.length - 1) % 3) + 1);
  for (let i = grouped.length; i < digits.length; i += 3) grouped += `,${digits.slice(i, i + 3)}`;
  return n < 0 ? `-${grouped}` : grouped;
}
