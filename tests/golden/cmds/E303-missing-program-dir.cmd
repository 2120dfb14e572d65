sim tests/golden/no-such-program
