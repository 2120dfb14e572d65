check tests/golden/no-such-file.mgen
