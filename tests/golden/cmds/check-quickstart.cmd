check examples/quickstart.mgen
