/* sample2 (seed 002): foo1 keeps a local variable on the stack.
 *   sample2 [INPUT [LINGER_SECONDS [helper]]]
 * INPUT (default 8) is subtracted from variable1 (100); LINGER keeps the process
 * alive so /proc/PID/maps can be read; "helper" calls foo1 through helper(). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct test_struct {
	uint8_t variable1;
	uint8_t variable2;
	uint32_t variable3;
	uint32_t variable4;
};

uint8_t foo1(uint8_t input)
{
	uint8_t variable1 = 100;
	struct test_struct struct1;

	(void)struct1;
	variable1 -= input;
	return (variable1 < 50 ? 1 : 0);
}

__attribute__((noinline)) uint8_t helper(uint8_t input)
{
	return foo1(input);
}

int main(int argc, char **argv)
{
	int input = argc > 1 ? atoi(argv[1]) : 8;
	int linger = argc > 2 ? atoi(argv[2]) : 0;
	int via_helper = argc > 3 && strcmp(argv[3], "helper") == 0;

	printf("size of test_struct is %ld\n", sizeof(struct test_struct));
	printf("foo1(%d) = %d\n", input, via_helper ? helper(input) : foo1(input));
	fflush(stdout);
	sleep(linger);
	return 0;
}
