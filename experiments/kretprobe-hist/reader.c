/* reader: read FILE to the end in CHUNK-byte read(2) calls (default 4096). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	size_t chunk = argc > 2 ? (size_t)atol(argv[2]) : 4096;
	char *buf = malloc(chunk);
	int fd = open(argc > 1 ? argv[1] : "data.bin", O_RDONLY);
	long reads = 0, total = 0;
	ssize_t n;

	if (fd < 0 || !buf) {
		perror("reader");
		return 1;
	}
	while ((n = read(fd, buf, chunk)) > 0) {
		reads++;
		total += n;
	}
	printf("reader: %ld reads of up to %zu bytes, %ld bytes\n", reads, chunk, total);
	return 0;
}
