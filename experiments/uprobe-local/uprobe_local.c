/* Attach uprobe_local.bpf.o at BINARY:foo1+OFFSET; variable1 is at rbp+DISP.
 *   uprobe_local BINARY OFFSET DISP */
#include "lib/kl_user.h"

int main(int argc, char **argv)
{
	LIBBPF_OPTS(bpf_uprobe_opts, opts, .func_name = "foo1");
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_link *link;
	__s64 disp;
	__u32 key = 0;

	kl_init();
	if (argc != 4) {
		fprintf(stderr, "usage: uprobe_local BINARY OFFSET DISP\n");
		return 2;
	}
	disp = atoll(argv[3]);
	obj = kl_load("uprobe_local.bpf.o");
	if (!obj)
		return 1;
	bpf_map_update_elem(kl_map_fd(obj, "config"), &key, &disp, BPF_ANY);
	prog = bpf_object__find_program_by_name(obj, "foo1_local");
	link = bpf_program__attach_uprobe_opts(prog, -1, argv[1], atol(argv[2]), &opts);
	if (!link) {
		fprintf(stderr, "uprobe_local: attach at %s:foo1+%s failed: %s\n", argv[1],
			argv[2], strerror(errno));
		return 1;
	}
	printf("uprobe_local: attached at foo1+%s of %s; variable1 at rbp%+lld\n", argv[2],
	       argv[1], (long long)disp);
	printf("uprobe_local: ready\n");
	kl_wait();
	bpf_link__destroy(link);
	bpf_object__close(obj);
	return 0;
}
