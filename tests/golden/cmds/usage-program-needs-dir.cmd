compile examples/quickstart.mgen --emit program
