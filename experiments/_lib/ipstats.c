/* kernlab: load the per-IP statistics programs and report what they counted.
 *   ipstats [-b IP]... skb|native DEV      attach ipstats.bpf.o's XDP program to DEV in
 *                                          generic (skb) or native (driver) mode
 *   ipstats [-b IP]... [-n N] testrun SRC...  no traffic: run the XDP program on N built
 *                                          frames from each SRC through BPF_PROG_TEST_RUN
 *   ipstats [-b IP]... tc DEV OBJ          attach OBJ's tc_ingress and tc_egress programs
 *                                          to DEV's clsact qdisc (direct action)
 * -b puts IP on the blocklist. An attaching mode prints "ipstats: ready", waits for
 * SIGINT, prints one line per source address ("ipstats: from IP packets=P bytes=B
 * dropped=D"; tc also "ipstats: to IP ..." from its egress map) and detaches.
 */
#include <arpa/inet.h>
#include <net/if.h>
#include <linux/if_link.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/icmp.h>
#include "lib/kl_user.h"

#define MAX_BLOCKED 16
#define FRAME_PAYLOAD 56 /* ping's default */

struct ipstats { __u64 packets; __u64 bytes; __u64 dropped; };

static const char *blocked[MAX_BLOCKED];
static int nblocked;

static int usage(void)
{
	fprintf(stderr, "usage: ipstats [-b IP]... skb|native DEV | [-n N] testrun SRC... | tc DEV OBJ\n");
	return 2;
}

static int parse_ip(const char *text, __u32 *addr)
{
	struct in_addr in;

	if (inet_pton(AF_INET, text, &in) != 1) {
		fprintf(stderr, "ipstats: %s is no IPv4 address\n", text);
		return -1;
	}
	*addr = in.s_addr;
	return 0;
}

/* Put every -b address in the object's blocklist map. */
static int fill_blocklist(struct bpf_object *obj)
{
	int fd = kl_map_fd(obj, "blocklist");
	__u8 one = 1;
	__u32 addr;

	for (int i = 0; i < nblocked; i++) {
		if (fd < 0 || parse_ip(blocked[i], &addr) || bpf_map_update_elem(fd, &addr, &one, BPF_ANY))
			return -1;
		printf("ipstats: blocking %s\n", blocked[i]);
	}
	return 0;
}

/* One line per address in the map named `name`, prefixed with `dir` ("from" or "to"). */
static void print_stats(struct bpf_object *obj, const char *name, const char *dir)
{
	int fd = kl_map_fd(obj, name);
	__u32 key, next, *prev = NULL;
	struct ipstats value;
	char text[INET_ADDRSTRLEN];

	while (fd >= 0 && bpf_map_get_next_key(fd, prev, &next) == 0) {
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &value))
			continue;
		inet_ntop(AF_INET, &key, text, sizeof(text));
		printf("ipstats: %s %s packets=%llu bytes=%llu dropped=%llu\n", dir, text,
		       (unsigned long long)value.packets, (unsigned long long)value.bytes,
		       (unsigned long long)value.dropped);
	}
}

static const char *attach_mode_name(__u8 mode)
{
	switch (mode) {
	case XDP_ATTACHED_DRV: return "native";
	case XDP_ATTACHED_SKB: return "skb";
	case XDP_ATTACHED_HW: return "offload";
	case XDP_ATTACHED_MULTI: return "multi";
	default: return "none";
	}
}

static int run_xdp(struct bpf_object *obj, const char *mode, const char *dev)
{
	int native = strcmp(mode, "native") == 0;
	__u32 flags = XDP_FLAGS_UPDATE_IF_NOEXIST | (native ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE);
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, "xdp_ipstats");
	int ifindex = if_nametoindex(dev), err;
	LIBBPF_OPTS(bpf_xdp_query_opts, query);

	if (!ifindex || !prog) {
		fprintf(stderr, "ipstats: %s\n", ifindex ? "no program xdp_ipstats" : "no such device");
		return 1;
	}
	err = bpf_xdp_attach(ifindex, bpf_program__fd(prog), flags, NULL);
	if (err) {
		fprintf(stderr, "ipstats: %s XDP on %s refused: %s\n", mode, dev, strerror(-err));
		return 1;
	}
	/* flags 0: the attribute the mode-specific query reads is 4.19's (4.15 answers 0) */
	err = bpf_xdp_query(ifindex, 0, &query);
	printf("ipstats: attached xdp_ipstats to %s in %s mode; the kernel reports %s\n", dev, mode,
	       err ? "nothing (query failed)" : attach_mode_name(query.attach_mode));
	printf("ipstats: ready\n");
	kl_wait();
	print_stats(obj, "stats", "from");
	bpf_xdp_detach(ifindex, native ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE, NULL);
	return 0;
}

/* An Ethernet + IPv4 + ICMP echo frame from `source` to 10.11.0.1, as ping sends it. */
static size_t build_frame(unsigned char *frame, __u32 source)
{
	struct ethhdr *eth = (struct ethhdr *)frame;
	struct iphdr *ip = (struct iphdr *)(eth + 1);
	struct icmphdr *icmp = (struct icmphdr *)(ip + 1);
	size_t ip_len = sizeof(*ip) + sizeof(*icmp) + FRAME_PAYLOAD;

	memset(frame, 0, sizeof(*eth) + ip_len);
	memcpy(eth->h_dest, "\x02\x00\x00\x00\x00\x01", ETH_ALEN);
	memcpy(eth->h_source, "\x02\x00\x00\x00\x00\x02", ETH_ALEN);
	eth->h_proto = htons(ETH_P_IP);
	ip->version = 4;
	ip->ihl = 5;
	ip->ttl = 64;
	ip->protocol = IPPROTO_ICMP;
	ip->tot_len = htons(ip_len);
	ip->saddr = source;
	inet_pton(AF_INET, "10.11.0.1", &ip->daddr);
	icmp->type = ICMP_ECHO;
	return sizeof(*eth) + ip_len;
}

static const char *xdp_action_name(__u32 action)
{
	static const char *names[] = {"XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT"};

	return action < 5 ? names[action] : "unknown";
}

static int run_testrun(struct bpf_object *obj, int count, char **sources, int nsources)
{
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, "xdp_ipstats");
	unsigned char frame[256];
	__u32 source;

	for (int i = 0; i < nsources; i++) {
		LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .repeat = 1);
		__u32 first = 0;
		int err = 0;

		if (parse_ip(sources[i], &source))
			return 1;
		opts.data_size_in = build_frame(frame, source);
		for (int n = 0; n < count && !err; n++) {
			err = bpf_prog_test_run_opts(bpf_program__fd(prog), &opts);
			if (!n)
				first = opts.retval;
			else if (opts.retval != first)
				printf("ipstats: test-run from %s: frame %d gave %s after %s\n", sources[i],
				       n, xdp_action_name(opts.retval), xdp_action_name(first));
		}
		if (err) {
			fprintf(stderr, "ipstats: BPF_PROG_TEST_RUN refused: %s\n", strerror(-err));
			return 1;
		}
		printf("ipstats: test-run from %s: %d frames of %u bytes, %s\n", sources[i], count,
		       opts.data_size_in, xdp_action_name(first));
	}
	print_stats(obj, "stats", "from");
	return 0;
}

static int tc_attach(struct bpf_object *obj, struct bpf_tc_hook *hook, const char *name,
		     enum bpf_tc_attach_point point)
{
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, name);
	LIBBPF_OPTS(bpf_tc_opts, opts);
	int err;

	if (!prog) {
		fprintf(stderr, "ipstats: no program %s\n", name);
		return -1;
	}
	opts.prog_fd = bpf_program__fd(prog);
	hook->attach_point = point;
	err = bpf_tc_attach(hook, &opts);
	if (err)
		fprintf(stderr, "ipstats: tc %s on ifindex %d refused: %s\n", name, hook->ifindex,
			strerror(-err));
	else
		printf("ipstats: attached %s (tc, direct action, handle %u prio %u)\n", name,
		       opts.handle, opts.priority);
	return err;
}

static int run_tc(struct bpf_object *obj, const char *dev)
{
	int ifindex = if_nametoindex(dev), err;
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS);

	if (!ifindex) {
		fprintf(stderr, "ipstats: no device %s\n", dev);
		return 1;
	}
	err = bpf_tc_hook_create(&hook); /* the clsact qdisc */
	if (err && err != -EEXIST) {
		fprintf(stderr, "ipstats: clsact qdisc on %s refused: %s\n", dev, strerror(-err));
		return 1;
	}
	if (tc_attach(obj, &hook, "tc_ingress", BPF_TC_INGRESS) ||
	    tc_attach(obj, &hook, "tc_egress", BPF_TC_EGRESS))
		return 1;
	printf("ipstats: ready\n");
	kl_wait();
	print_stats(obj, "stats", "from");
	print_stats(obj, "egress", "to");
	hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS;
	bpf_tc_hook_destroy(&hook);
	return 0;
}

int main(int argc, char **argv)
{
	const char *object = "ipstats.bpf.o";
	struct bpf_object *obj;
	int opt, count = 5, status;

	kl_init();
	while ((opt = getopt(argc, argv, "b:n:")) != -1) {
		if (opt == 'b' && nblocked < MAX_BLOCKED)
			blocked[nblocked++] = optarg;
		else if (opt == 'n')
			count = atoi(optarg);
		else
			return usage();
	}
	if (optind >= argc || count < 1)
		return usage();
	const char *mode = argv[optind];
	int tc = strcmp(mode, "tc") == 0, testrun = strcmp(mode, "testrun") == 0;

	if ((tc && argc - optind != 3) || (testrun && argc - optind < 2) ||
	    (!tc && !testrun && (argc - optind != 2 || (strcmp(mode, "skb") && strcmp(mode, "native")))))
		return usage();
	if (tc)
		object = argv[optind + 2];
	obj = kl_load(object);
	if (!obj || fill_blocklist(obj))
		return 1;
	if (testrun)
		status = run_testrun(obj, count, argv + optind + 1, argc - optind - 1);
	else if (tc)
		status = run_tc(obj, argv[optind + 1]);
	else
		status = run_xdp(obj, mode, argv[optind + 1]);
	bpf_object__close(obj);
	return status;
}
