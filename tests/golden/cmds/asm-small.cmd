compile tests/golden/cases/ok-small.mgen --emit asm
