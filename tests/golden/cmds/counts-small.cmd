run tests/golden/cases/ok-small.mgen --counts-only
