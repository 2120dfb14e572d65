compile tests/golden/cases/ok-small.mgen --emit ir --json
