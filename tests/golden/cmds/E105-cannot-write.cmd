compile tests/golden/cases/ok-check.mgen -o tests/golden/no-such-dir/out.mir
