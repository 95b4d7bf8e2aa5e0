/* buffermap: pass the read buffer's address to BPF, read the file into it, then
 * compare what BPF saw in the buffer at read exit with the file's first bytes.
 *   buffermap FILE [ADDR_DELTA]   ADDR_DELTA (default 0) is added to the address passed.
 */
#include <fcntl.h>
#include "lib/kl_user.h"

#define SNAP 16

struct target { __u64 pid; __u64 buf; };
struct seen { __u64 state; __s64 ret; char data[SNAP + 1]; };

int main(int argc, char **argv)
{
	const char *file = argc > 1 ? argv[1] : "data.txt";
	long delta = argc > 2 ? atol(argv[2]) : 0;
	struct bpf_object *obj;
	struct target t;
	struct seen s;
	__u32 key = 0;
	char *buf = calloc(1, 256);
	int fd, same;
	ssize_t n;

	kl_init();
	obj = kl_load("buffermap.bpf.o");
	if (!obj || kl_attach_all(obj))
		return 1;
	fd = open(file, O_RDONLY);
	if (fd < 0 || !buf) {
		perror("buffermap: open");
		return 1;
	}
	t.pid = getpid();
	t.buf = (__u64)(unsigned long)buf + delta;
	bpf_map_update_elem(kl_map_fd(obj, "target"), &key, &t, BPF_ANY);
	printf("buffermap: buffer on user side = %p, passed %#llx\n", buf,
	       (unsigned long long)t.buf);
	n = read(fd, buf, 255);
	memset(&s, 0, sizeof(s));
	bpf_map_lookup_elem(kl_map_fd(obj, "seen"), &key, &s);
	same = s.state == 2 && n >= SNAP && memcmp(s.data, buf, SNAP) == 0;
	printf("buffermap: read %zd bytes; file starts with '%.16s'; map holds '%.16s' (ret %lld)\n",
	       n, buf, s.data, (long long)s.ret);
	printf("buffermap: content match: %s\n", same ? "yes" : "no");
	kl_detach_all();
	bpf_object__close(obj);
	return 0;
}
