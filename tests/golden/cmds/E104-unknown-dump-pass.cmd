compile examples/quickstart.mgen --dump-ir-after shar
