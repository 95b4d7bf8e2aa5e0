/* kernlab generic loader.
 *   klload OBJ...     load, attach every program by SEC() name, print "klload: ready",
 *                     wait for SIGINT/SIGTERM, detach.
 *   klload -l OBJ...  load only; exit 1 if the kernel refuses a program (libbpf
 *                     prints the verifier log on stderr).
 *   klload -k PROG=SYMBOL OBJ...  attach kprobe program PROG at SYMBOL instead of
 *                     its SEC() name (e.g. a gcc clone such as foo.constprop.0), as a
 *                     plain kprobe: a SEC("kprobe.multi/...") program (6.x samples/bpf)
 *                     is loaded as a plain kprobe, so neither FPROBE nor a glob is needed.
 */
#include "lib/kl_user.h"

static const char *override_prog, *override_sym;

/* Attach every program of obj; PROG named by -k goes to its SYMBOL. */
static int attach(struct bpf_object *obj)
{
	struct bpf_program *prog;

	if (!override_prog)
		return kl_attach_all(obj);
	bpf_object__for_each_program(prog, obj) {
		struct bpf_link *link;

		if (strcmp(bpf_program__name(prog), override_prog) != 0) {
			link = bpf_program__attach(prog);
		} else {
			link = bpf_program__attach_kprobe(prog, false, override_sym);
			printf("klload: %s attached at kprobe %s (not its SEC name %s)\n",
			       override_prog, override_sym, bpf_program__section_name(prog));
		}
		if (!link) {
			fprintf(stderr, "klload: attaching %s failed: %s\n", bpf_program__name(prog),
				strerror(errno));
			return -1;
		}
		if (kl_nlinks < KL_MAX_LINKS)
			kl_links[kl_nlinks++] = link;
	}
	return 0;
}

/* PROG named by -k is loaded as a plain kprobe (libbpf gave kprobe.multi programs
 * the kprobe_multi attach type, which a perf kprobe refuses with EINVAL).
 */
static void as_plain_kprobe(struct bpf_object *obj)
{
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, override_prog);

	if (prog && bpf_program__expected_attach_type(prog) != 0)
		bpf_program__set_expected_attach_type(prog, 0);
}

int main(int argc, char **argv)
{
	int load_only = 0, first = 1;
	struct bpf_object *objs[16];
	int n = 0;

	kl_init();
	while (first < argc && argv[first][0] == '-') {
		if (strcmp(argv[first], "-l") == 0) {
			load_only = 1;
			first++;
		} else if (strcmp(argv[first], "-k") == 0 && first + 1 < argc &&
			   strchr(argv[first + 1], '=')) {
			static char spec[256];

			snprintf(spec, sizeof(spec), "%s", argv[first + 1]);
			*strchr(spec, '=') = 0;
			override_prog = spec;
			override_sym = spec + strlen(spec) + 1;
			first += 2;
		} else {
			break;
		}
	}
	if (first >= argc) {
		fprintf(stderr, "usage: klload [-l] [-k PROG=SYMBOL] OBJ...\n");
		return 2;
	}
	for (int i = first; i < argc && n < 16; i++) {
		struct bpf_object *obj = kl_open(argv[i]);

		if (obj && override_prog)
			as_plain_kprobe(obj);
		if (!obj || !(obj = kl_load_opened(obj, argv[i])))
			return 1;
		objs[n++] = obj;
		if (!load_only && attach(obj))
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
