/*
 * The peer of `npm run bench:compare`: a minimal native TLB-only replayer of Dinero din traces, to
 * show what memvirt's per-record cost is against plain C doing the least a TLB simulator can do.
 *
 * One data TLB of 64 entries, 4 ways, LRU, 4 KiB pages, as memvirt's config
 * {"tlb": {"l1d": {"entries": 64, "ways": 4, "policy": "lru"}, "l1i": null, "l2": null}} has it.
 * Reads and writes (din labels 0 and 1, r and w) look up the TLB; fetches (2, i) are counted and
 * skipped, since that config has no instruction TLB. A miss fills the entry; there is no page table,
 * no walk, no fault and no timing: memvirt does all of that on top, so memvirt/this is an upper bound
 * on memvirt's overhead for the same question.
 *
 * Input is read in 1 MiB blocks and parsed by hand: stdio's line functions would dominate the run.
 * Prints one JSON object: records, data accesses, misses.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SETS 16
#define WAYS 4
#define BLOCK (1 << 20)

static uint64_t tags[SETS][WAYS];
static uint8_t valid[SETS][WAYS];
static uint64_t stamp[SETS][WAYS];
static uint64_t clock_now;
static uint64_t records, data_accesses, misses;

static void access_page(uint64_t page) {
  const unsigned set = (unsigned)(page & (SETS - 1));
  uint64_t *t = tags[set];
  unsigned victim = 0;
  clock_now++;
  for (unsigned w = 0; w < WAYS; w++) {
    if (valid[set][w] && t[w] == page) {
      stamp[set][w] = clock_now;
      return;
    }
  }
  misses++;
  for (unsigned w = 0; w < WAYS; w++) {
    if (!valid[set][w]) {
      victim = w;
      break;
    }
    if (stamp[set][w] < stamp[set][victim]) victim = w;
  }
  valid[set][victim] = 1;
  t[victim] = page;
  stamp[set][victim] = clock_now;
}

static int hex_value(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c |= 0x20;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* One din line without its newline: "label address [size]". */
static void line(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t')) p++;
  if (p == end) return;
  const char label = *p++;
  while (p < end && (*p == ' ' || *p == '\t')) p++;
  if (p + 1 < end && p[0] == '0' && (p[1] | 0x20) == 'x') p += 2;
  uint64_t address = 0;
  int digit;
  while (p < end && (digit = hex_value((unsigned char)*p)) >= 0) {
    address = (address << 4) | (uint64_t)digit;
    p++;
  }
  records++;
  if (label == '0' || label == '1' || label == 'r' || label == 'w' || label == 'R' || label == 'W') {
    data_accesses++;
    access_page(address >> 12);
  }
}

int main(int argc, char **argv) {
  const int fd = argc > 1 ? open(argv[1], O_RDONLY) : 0;
  if (fd < 0) {
    perror(argv[1]);
    return 2;
  }
  char *buffer = malloc(BLOCK + 256);
  size_t kept = 0;
  for (;;) {
    const ssize_t got = read(fd, buffer + kept, BLOCK);
    if (got < 0) {
      perror("read");
      return 2;
    }
    const size_t have = kept + (size_t)got;
    const char *p = buffer;
    const char *end = buffer + have;
    for (;;) {
      const char *nl = memchr(p, '\n', (size_t)(end - p));
      if (!nl) break;
      line(p, nl);
      p = nl + 1;
    }
    kept = (size_t)(end - p);
    if (got == 0) {
      if (kept) line(p, end);
      break;
    }
    if (kept > 256) {
      fprintf(stderr, "line too long\n");
      return 2;
    }
    memmove(buffer, p, kept);
  }
  printf("{\"records\": %llu, \"dataAccesses\": %llu, \"misses\": %llu}\n", (unsigned long long)records,
         (unsigned long long)data_accesses, (unsigned long long)misses);
  return 0;
}
