compile tests/golden/cases/ok-merge-identical.mgen --passes place,merge --emit placement
