check examples/glue8.mgen
