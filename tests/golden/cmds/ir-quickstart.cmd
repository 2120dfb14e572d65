compile examples/quickstart.mgen --emit ir
