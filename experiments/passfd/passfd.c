/* passfd: pass our pid and a file descriptor to BPF through a map, read the file,
 * read back how many of our reads the BPF side matched.
 *   passfd FILE [FD_DELTA]   FD_DELTA (default 0) is added to the fd put in the map.
 */
#include <fcntl.h>
#include "lib/kl_user.h"

struct params { __u32 pid; __u32 fd; };
struct result { __u64 matches; __u64 last_count; };

int main(int argc, char **argv)
{
	const char *file = argc > 1 ? argv[1] : "data.txt";
	int delta = argc > 2 ? atoi(argv[2]) : 0;
	struct bpf_object *obj;
	struct params p;
	struct result r = {0};
	__u32 key = 0;
	char buf[16];
	int fd, reads = 0;

	kl_init();
	obj = kl_load("passfd.bpf.o");
	if (!obj || kl_attach_all(obj))
		return 1;
	fd = open(file, O_RDONLY);
	if (fd < 0) {
		perror("passfd: open");
		return 1;
	}
	p.pid = getpid();
	p.fd = fd + delta;
	if (bpf_map_update_elem(kl_map_fd(obj, "params"), &key, &p, BPF_ANY)) {
		perror("passfd: map update");
		return 1;
	}
	printf("passfd: pid %u passes fd %u\n", p.pid, p.fd);
	while (read(fd, buf, sizeof(buf)) > 0)
		reads++;
	bpf_map_lookup_elem(kl_map_fd(obj, "result"), &key, &r);
	printf("passfd: %d reads of 16 bytes; BPF matched %llu reads, last count %llu\n",
	       reads + 1, (unsigned long long)r.matches, (unsigned long long)r.last_count);
	kl_detach_all();
	bpf_object__close(obj);
	return 0;
}
