/* hellotrace workload: write a greeting N times (default 3) with write(2). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *msg = argc > 2 ? argv[2] : "hello, kernlab\n";
	int times = argc > 1 ? atoi(argv[1]) : 3;

	for (int i = 0; i < times; i++)
		if (write(1, msg, strlen(msg)) < 0)
			return 1;
	return 0;
}
