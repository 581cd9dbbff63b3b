/* Times process_vm_readv of MAX_RW_COUNT from an untouched 2 GiB anonymous region into a
 * small local buffer that every local iovec aliases, for several placements of the remote
 * element and of the local buffer (docs/BENCHMARKS.md, "The 2 GiB cases under TCG").
 * On a THP=always kernel the untouched region is read through the huge zero page, which the
 * kernel copies from through its direct map (2 MiB-aligned), so the source address of remote
 * page A is congruent to A modulo 2 MiB; the column "congruent" says whether it is also
 * congruent to the page's destination (remote base and local buffer agree modulo 2 MiB).
 * Build: gcc -O2 -static -o probe tcg-copy-probe.c; run: scripts/tcg-copy-probe.sh. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB (1UL << 20)
#define GIB (1UL << 30)

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static long vmstat(const char *key)
{
	FILE *f = fopen("/proc/vmstat", "r");
	char l[256];
	long v = -1;
	size_t n = strlen(key);
	while (f && fgets(l, sizeof l, f))
		if (!strncmp(l, key, n) && l[n] == ' ')
			v = atol(l + n + 1);
	if (f)
		fclose(f);
	return v;
}

struct variant {
	const char *name;
	unsigned long vma;   /* where the 2 GiB (+4 MiB) region is mapped */
	unsigned long skip;  /* the remote element starts this far into it */
	int madv;            /* madvise on the region (0: none) */
	unsigned long local; /* the local buffer */
	size_t local_len;
};

int main(void)
{
	const struct variant vs[] = {
		{"remote vma+4K (the case before)", 0x200000001000UL, 0, 0, 0x300000001000UL, 2 * MIB},
		{"remote vma 2M-aligned (now)", 0x200000200000UL, 0, 0, 0x300000001000UL, 2 * MIB},
		{"aligned vma, element at +4K", 0x200000000000UL, 4096, 0, 0x300000001000UL, 2 * MIB},
		{"vma+4K, element at next 2M", 0x200000001000UL, 0x1ff000, 0, 0x300000001000UL, 2 * MIB},
		{"MADV_NOHUGEPAGE, vma+4K", 0x200000001000UL, 0, MADV_NOHUGEPAGE, 0x300000001000UL, 2 * MIB},
		{"thp case: local 4M at +4K", 0x200000200000UL, 0, MADV_HUGEPAGE, 0x300000001000UL, 4 * MIB},
		{"thp, local 4M 2M-aligned", 0x200000200000UL, 0, MADV_HUGEPAGE, 0x300000000000UL, 4 * MIB},
	};
	printf("%-34s %9s %8s %9s %10s\n", "variant", "congruent", "seconds", "MB/s", "faults");
	for (unsigned k = 0; k < sizeof vs / sizeof *vs; k++) {
		const struct variant *v = &vs[k];
		size_t len = 2 * GIB + 4 * MIB;
		int p[2];
		if (pipe(p))
			return 1;
		pid_t c = fork();
		if (c == 0) {
			char *r = mmap((void *)v->vma, len, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
			if (r == MAP_FAILED)
				_exit(1);
			if (v->madv)
				madvise(r, len, v->madv);
			if (write(p[1], &r, sizeof r) != sizeof r)
				_exit(1);
			pause();
			_exit(0);
		}
		char *r;
		if (read(p[0], &r, sizeof r) != sizeof r) {
			printf("%-34s target could not map its region\n", v->name);
			waitpid(c, 0, 0);
			continue;
		}
		char *b = mmap((void *)v->local, v->local_len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (b == MAP_FAILED)
			return 1;
		memset(b, 1, v->local_len);
		int n = (int)(2 * GIB / v->local_len);
		struct iovec *l = calloc(n, sizeof *l);
		for (int i = 0; i < n; i++) {
			l[i].iov_base = b;
			l[i].iov_len = v->local_len;
		}
		struct iovec rv = {r + v->skip, 2 * GIB};
		/* With the huge zero page the source of remote page k is the direct-map address of
		 * subpage (remote address / 4K) % 512; the destination is local + k * 4K % len. */
		const char *congruent = v->madv == MADV_NOHUGEPAGE ? "n/a"
			: ((unsigned long)rv.iov_base - (unsigned long)b) % (2 * MIB) == 0 ? "yes" : "no";
		long f0 = vmstat("pgfault");
		double t = now();
		long got = process_vm_readv(c, l, n, &rv, 1, 0);
		double d = now() - t;
		long f1 = vmstat("pgfault");
		printf("%-34s %9s %8.2f %9.0f %10ld%s\n", v->name, congruent, d,
		       got > 0 ? got / d / 1e6 : 0.0, f1 - f0, got == 0x7ffff000 ? "" : "  (short!)");
		fflush(stdout);
		kill(c, SIGKILL);
		waitpid(c, 0, 0);
		munmap(b, v->local_len);
		free(l);
		close(p[0]);
		close(p[1]);
	}
	printf("huge zero page allocations: %ld\n", vmstat("thp_zero_page_alloc"));
	return 0;
}
