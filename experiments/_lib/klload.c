/* kernlab generic loader.
 *   klload OBJ...     load, attach every program by SEC() name, print "klload: ready",
 *                     wait for SIGINT/SIGTERM, detach.
 *   klload -l OBJ...  load only; exit 1 if the kernel refuses a program (libbpf
 *                     prints the verifier log on stderr).
 */
#include "lib/kl_user.h"

int main(int argc, char **argv)
{
	int load_only = 0, first = 1;
	struct bpf_object *objs[16];
	int n = 0;

	kl_init();
	if (argc > 1 && strcmp(argv[1], "-l") == 0) {
		load_only = 1;
		first = 2;
	}
	if (first >= argc) {
		fprintf(stderr, "usage: klload [-l] OBJ...\n");
		return 2;
	}
	for (int i = first; i < argc && n < 16; i++) {
		struct bpf_object *obj = kl_load(argv[i]);

		if (!obj)
			return 1;
		objs[n++] = obj;
		if (!load_only && kl_attach_all(obj))
			return 1;
	}
	if (load_only) {
		printf("klload: all programs loaded\n");
		return 0;
	}
	printf("klload: ready\n");
	kl_wait();
	kl_detach_all();
	for (int i = 0; i < n; i++)
		bpf_object__close(objs[i]);
	printf("klload: detached\n");
	return 0;
}
