compile tests/golden/cases/ok-small.mgen --emit ir --dump-ir-after all
