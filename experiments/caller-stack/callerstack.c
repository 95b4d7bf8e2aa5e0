/* Attach callerstack.bpf.o at BINARY:foo1, then for each process that hits it look
 * its return address up in /proc/PID/maps while the process still runs and print the
 * mapping and the address's offset in the file.
 *   callerstack BINARY */
#include <inttypes.h>
#include "lib/kl_user.h"

static void report(__u32 pid, __u64 addr)
{
	char path[64], line[512];
	FILE *maps;

	snprintf(path, sizeof(path), "/proc/%u/maps", pid);
	maps = fopen(path, "r");
	if (!maps) {
		printf("callerstack: pid %u return address %#llx: %s gone\n", pid,
		       (unsigned long long)addr, path);
		return;
	}
	while (fgets(line, sizeof(line), maps)) {
		unsigned long long start, end, off;
		char perms[8], file[256] = "";

		if (sscanf(line, "%llx-%llx %7s %llx %*s %*s %255s", &start, &end, perms, &off,
			   file) < 4)
			continue;
		if (addr >= start && addr < end) {
			printf("callerstack: pid %u return address %#llx in %s", pid,
			       (unsigned long long)addr, line);
			printf("callerstack: resolve file=%s file_offset=%#llx\n", file,
			       (unsigned long long)(addr - start + off));
			break;
		}
	}
	fclose(maps);
}

int main(int argc, char **argv)
{
	LIBBPF_OPTS(bpf_uprobe_opts, opts, .func_name = "foo1");
	struct bpf_object *obj;
	struct bpf_link *link;
	__u32 done[64];
	int ndone = 0, fd;

	kl_init();
	if (argc != 2) {
		fprintf(stderr, "usage: callerstack BINARY\n");
		return 2;
	}
	obj = kl_load("callerstack.bpf.o");
	if (!obj)
		return 1;
	link = bpf_program__attach_uprobe_opts(
		bpf_object__find_program_by_name(obj, "foo1_entry"), -1, argv[1], 0, &opts);
	if (!link) {
		fprintf(stderr, "callerstack: attach at %s:foo1 failed: %s\n", argv[1],
			strerror(errno));
		return 1;
	}
	fd = kl_map_fd(obj, "seen");
	printf("callerstack: ready\n");
	while (!kl_stop) {
		__u32 key, next, *prev = NULL;

		while (bpf_map_get_next_key(fd, prev, &next) == 0) {
			__u64 addr;
			int known = 0;

			key = next;
			prev = &key;
			for (int i = 0; i < ndone; i++)
				known |= done[i] == key;
			if (known || bpf_map_lookup_elem(fd, &key, &addr))
				continue;
			report(key, addr);
			if (ndone < 64)
				done[ndone++] = key;
		}
		usleep(20 * 1000);
	}
	bpf_link__destroy(link);
	bpf_object__close(obj);
	return 0;
}
