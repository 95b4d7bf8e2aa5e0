/* kernlab: helpers for user-space loaders (gcc, linked with -lbpf). */
#ifndef KL_USER_H
#define KL_USER_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define KL_MAX_LINKS 64

static volatile sig_atomic_t kl_stop;
static struct bpf_link *kl_links[KL_MAX_LINKS];
static int kl_nlinks;

static void kl_on_signal(int sig) { (void)sig; kl_stop = 1; }

/* Line-buffered stdout/stderr (the runner watches the output) and Ctrl-C handling. */
static inline void kl_init(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	setvbuf(stderr, NULL, _IOLBF, 0);
	signal(SIGINT, kl_on_signal);
	signal(SIGTERM, kl_on_signal);
}

/* Open `path` without loading it; NULL (after printing why) when it cannot be read. */
static inline struct bpf_object *kl_open(const char *path)
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);

	if (!obj)
		fprintf(stderr, "kl: cannot open %s: %s\n", path, strerror(errno));
	return obj;
}

/* Load an opened `obj` (read from `path`); NULL (after printing why) when the kernel refuses it. */
static inline struct bpf_object *kl_load_opened(struct bpf_object *obj, const char *path)
{
	int err = bpf_object__load(obj);

	if (err) {
		fprintf(stderr, "kl: loading %s failed: %s\n", path, strerror(-err));
		bpf_object__close(obj);
		return NULL;
	}
	printf("kl: loaded %s\n", path);
	return obj;
}

/* Open and load `path`; NULL (after printing why) when the kernel refuses it. */
static inline struct bpf_object *kl_load(const char *path)
{
	struct bpf_object *obj = kl_open(path);

	return obj ? kl_load_opened(obj, path) : NULL;
}

/* Attach every program of `obj` by its SEC() name; -1 on the first failure. */
static inline int kl_attach_all(struct bpf_object *obj)
{
	struct bpf_program *prog;

	bpf_object__for_each_program(prog, obj) {
		struct bpf_link *link = bpf_program__attach(prog);

		if (!link) {
			fprintf(stderr, "kl: attaching %s (%s) failed: %s\n",
				bpf_program__name(prog), bpf_program__section_name(prog),
				strerror(errno));
			return -1;
		}
		if (kl_nlinks < KL_MAX_LINKS)
			kl_links[kl_nlinks++] = link;
		printf("kl: attached %s at %s\n", bpf_program__name(prog),
		       bpf_program__section_name(prog));
	}
	return 0;
}

static inline int kl_map_fd(struct bpf_object *obj, const char *name)
{
	int fd = bpf_object__find_map_fd_by_name(obj, name);

	if (fd < 0)
		fprintf(stderr, "kl: no map %s\n", name);
	return fd;
}

/* Sleep until SIGINT/SIGTERM. */
static inline void kl_wait(void)
{
	while (!kl_stop)
		usleep(50 * 1000);
}

static inline void kl_detach_all(void)
{
	for (int i = 0; i < kl_nlinks; i++)
		bpf_link__destroy(kl_links[i]);
	kl_nlinks = 0;
}

#endif
